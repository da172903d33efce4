"""Compaction, for real (Apache Kafka; the embedded broker does not compact), and a librdkafka
consumer downstream.

One pipeline on Apache Kafka with RocksDB tables. After the initial load its change topics and
table changelogs get settings that make the log cleaner run within the test; five orders are
edited three times, and a new order rolls the segments that hold the edits. Each test first
checks that the cleaner did run (offsets removed below the active segment, read from the
broker's log directory), then:

(a) a new consumer group (confluent-kafka: librdkafka) reading every change topic from offset 0
    finds the latest version of every record, each message valid against the published JSON
    Schema and keyed by the record id, and nothing older for a compacted key;
(b) a worker started on a fresh data directory after its ``links`` changelog was compacted
    recovers every link exactly (faust-streaming #176 reports restore stalls after compaction);
(c) ``talkstream replay --flow order-order --since earliest`` on compacted topics makes zero
    writes when the systems are in sync, and repairs an order removed behind talkstream's back.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest

from streams.mapping import load_mapping
from streams.topics import change_topics
from tests.e2e.harness import (Pipeline, assert_in_sync, bnxt_all, crm_all, crm_create, crm_update, run, settle,
                               stamped, wait_for, wait_in_sync, worker_status, writes)

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

SEED = 20
ROOT = Path(__file__).resolve().parents[2]
#: Per-topic settings that make the cleaner compact within seconds (closed segments only: a
#: segment rolls when a record comes 100 ms after its first).
COMPACT_NOW = {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "100",
               "min.compaction.lag.ms": "0"}
CHANGE_TOPICS = change_topics(load_mapping())
#: Compaction figures for the closing note: topic -> (offsets below the active segments, records left there).
FIGURES: dict[str, tuple[int, int]] = {}


def linked(p: Pipeline) -> dict[str, int]:
    return {flow: row["linked"] for flow, row in worker_status(p)["flows"].items()}


def alter_topic_configs(bootstrap: str, topics: list[str], configs: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET) for name, value in configs.items()])
        for topic in topics]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=30)


def read_with_librdkafka(bootstrap: str, topics: list[str], group: str) -> list[tuple[str, int, int, bytes, bytes]]:
    """Every record of ``topics`` from offset 0, read by a confluent-kafka consumer in its own group."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=30)
        ends = {}
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
                ends[(topic, partition)] = high
        consumer.assign([TopicPartition(t, p, 0) for (t, p) in ends])
        records, position = [], {tp: 0 for tp in ends}

        def behind() -> bool:
            return any(position[tp] < end for tp, end in ends.items())
        deadline_polls = 600
        while behind() and deadline_polls:
            deadline_polls -= 1
            for message in consumer.consume(num_messages=500, timeout=0.2):
                if message.error():
                    raise AssertionError(f"librdkafka: {message.error()}")
                tp = (message.topic(), message.partition())
                records.append((message.topic(), message.partition(), message.offset(), message.key(),
                                message.value()))
                position[tp] = message.offset() + 1
        assert not behind(), f"librdkafka stopped before the end: {position} of {ends}"
        return records
    finally:
        consumer.close()


def active_segment_bases(p: Pipeline, topic: str) -> dict[int, int]:
    """Partition -> base offset of its active (newest) segment, from the broker's log directory."""
    bases = {}
    for directory in (p.broker.members[0].directory / "data").glob(f"{topic}-*"):
        partition = int(directory.name.rsplit("-", 1)[1])
        bases[partition] = max(int(f.stem) for f in directory.glob("*.log"))
    return bases


def compacted(p: Pipeline, topic: str, records) -> tuple[int, int] | None:
    """(offsets below the active segments, records left there) once the cleaner removed older
    versions there (each key at most once below the active segment); None before."""
    bases = active_segment_bases(p, topic)
    closed = [(part, key) for t, part, offset, key, _v in records if t == topic and offset < bases.get(part, 0)]
    below = sum(bases.values())
    if below == 0 or len(closed) == below or len(set(closed)) != len(closed):
        return None
    return below, len(closed)


def crm_edit(p: Pipeline, order_id: str, name: str) -> None:
    crm_update(p, "orders", order_id, {"Name": name})


@pytest.fixture(scope="module")
def p(tmp_path_factory):
    pipe = Pipeline(tmp_path_factory.mktemp("compaction"), seed=SEED, broker_kind="kafka", store="rocksdb://")
    try:
        pipe.start()
        pipe.start_worker()
        wait_in_sync(pipe, timeout=120)
        changelogs = [f"{pipe.app_id}-links-changelog", f"{pipe.app_id}-routes-changelog"]
        alter_topic_configs(pipe.broker.bootstrap, CHANGE_TOPICS + changelogs, COMPACT_NOW)
        orders = sorted(run(crm_all(pipe, "orders")), key=lambda o: o["Id"])[:5]
        for round_ in range(3):  # three versions more of five orders, each synced before the next
            for order in orders:
                crm_edit(pipe, order["Id"], f"compaction round {round_}")
            wait_for(lambda: all(rows[0]["name"] == f"compaction round {round_}" for o in orders
                                 for rows in [stamped(run(bnxt_all(pipe, "order")), "customcrm:order:")[o["Id"]]]),
                     timeout=60, message=f"edit round {round_} synced")
        # a new order after the edits: the segments holding them roll and can be cleaned
        crm_create(pipe, "orders", {"Name": "rolls the segments", "CustomerNo": 10004, "OrderDate": "2026-12-03"})
        wait_in_sync(pipe, timeout=60)
        settle(pipe)
        yield pipe
    finally:
        pipe.stop()


def test_a_new_librdkafka_consumer_group_finds_the_latest_version_of_every_record_and_nothing_older(p):
    records = []

    def cleaned() -> bool:
        records[:] = read_with_librdkafka(p.broker.bootstrap, CHANGE_TOPICS, f"downstream-{uuid.uuid4().hex[:6]}")
        figures = {topic: compacted(p, topic, records) for topic in ("customcrm.order.changes",
                                                                      "businessnxt.order.changes")}
        if all(figures.values()):
            FIGURES.update(figures)
            return True
        return False
    wait_for(cleaned, timeout=90, message="the log cleaner compacted the order change topics")
    print(f"compaction figures: {FIGURES}")

    schema = json.loads((ROOT / "schemas" / "change.v1.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    latest: dict[tuple[str, bytes], dict] = {}
    for topic, _part, _offset, key, value in records:
        event = json.loads(value)
        validator.validate(event)
        assert key == event["id"].encode(), (topic, key, event["id"])
        latest[(topic, key)] = event
    for entity, resource in (("order", "orders"), ("product", "products"), ("user", "users")):
        current = {r["Id"]: r for r in run(crm_all(p, resource))}
        seen = {key.decode(): e for (topic, key), e in latest.items() if topic == f"customcrm.{entity}.changes"}
        assert set(seen) == set(current), entity
        assert all(seen[i]["data"] == current[i] for i in current), f"customcrm {entity}: not the latest version"
    orders = {str(row["orderNo"]): row for row in run(bnxt_all(p, "order"))}
    seen = {key.decode(): e for (topic, key), e in latest.items() if topic == "businessnxt.order.changes"}
    assert set(seen) == set(orders)
    assert all(seen[no]["data"]["name"] == orders[no]["name"] for no in orders), "businessnxt order: not the latest"
    products = {row["productNo"] for row in run(bnxt_all(p, "product"))}
    assert {key.decode() for (topic, key) in latest if topic == "businessnxt.product.changes"} == products


def test_a_worker_on_a_fresh_data_directory_recovers_every_link_from_the_compacted_changelog(p):
    changelog = f"{p.app_id}-links-changelog"
    records = []

    def cleaned() -> bool:
        records[:] = read_with_librdkafka(p.broker.bootstrap, [changelog], f"changelog-{uuid.uuid4().hex[:6]}")
        figure = compacted(p, changelog, records)
        if figure:
            FIGURES[changelog] = figure
        return figure is not None
    wait_for(cleaned, timeout=90, message="the log cleaner compacted the links changelog")
    print(f"compaction figures: {FIGURES}")
    expected = linked(p)
    assert sum(expected.values()) == 2 * SEED + SEED // 10 + 1
    p.worker.stop()
    before = (p.bnxt_stats()["mutations"], writes(p.crm_stats()))
    p.env_extra["TALKSTREAM_DATA_DIR"] = str(p.tmp / "fresh-data")  # nothing local: all from the changelog
    p.start_worker()
    assert linked(p) == expected, "links lost recovering from the compacted changelog"
    settle(p)
    assert (p.bnxt_stats()["mutations"], writes(p.crm_stats())) == before
    order = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])[-1]
    crm_edit(p, order["Id"], "edited after recovering from a compacted changelog")
    wait_for(lambda: stamped(run(bnxt_all(p, "order")), "customcrm:order:")[order["Id"]][0]["name"]
             == "edited after recovering from a compacted changelog", timeout=30, message="the edit arrived")
    settle(p)
    assert p.bnxt_stats()["mutations"] == before[0] + 1


def test_replay_since_earliest_on_compacted_topics_writes_nothing_in_sync_and_repairs_a_removed_order(p):
    settle(p)
    before = (p.bnxt_stats()["mutations"], writes(p.crm_stats()))
    assert "re-fed" in p.cli("replay", "--flow", "order-order", "--since", "earliest").stdout
    wait_for(lambda: "verify" in __import__("httpx").get(f"http://127.0.0.1:{p.web_port}/metrics").text,
             timeout=30, message="replayed events processed")
    settle(p, quiet=4.0)
    assert (p.bnxt_stats()["mutations"], writes(p.crm_stats())) == before

    victim = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])[0]  # one of the edited orders
    row = stamped(run(bnxt_all(p, "order")), "customcrm:order:")[victim["Id"]][0]

    async def remove():
        async with p.bnxt() as b:
            await b.delete("order", {"orderNo": {"_eq": row["orderNo"]}})
    run(remove())  # polling cannot see deletes; webhooks are off in this pipeline
    p.cli("replay", "--flow", "order-order", "--since", "earliest")
    wait_for(lambda: len(stamped(run(bnxt_all(p, "order")), "customcrm:order:").get(victim["Id"], [])) == 1,
             timeout=60, message="the removed order re-created")
    rebuilt = stamped(run(bnxt_all(p, "order")), "customcrm:order:")[victim["Id"]][0]
    assert rebuilt["name"] == victim["Name"] == "compaction round 2"
    settle(p)
    assert_in_sync(p)
