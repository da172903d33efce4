"""The real Apache Kafka that the project starts from Maven Central jars (``streams.apache_kafka``):
it starts and stops exactly its own processes, three nodes form one cluster, producers use
normal batches on it (the embedded broker's protection stays off), and Faust's table
recovery is exact on it with normal batches, with both stores."""
from __future__ import annotations

import asyncio
import base64
import os
import time

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams import broker_check
from streams.apache_kafka import (KAFKA_VERSION, ApacheKafka, ApacheKafkaUnavailable, cluster_id, fetch_jars,
                                  kafka_api_versions_ok, missing_tools)
from tests.integration.test_broker_smoke import run_scenario
from tests.support import require_apache_kafka

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.kafka
def test_three_nodes_form_one_cluster_and_stop_ends_exactly_their_processes(tmp_path):
    require_apache_kafka()
    kafka = ApacheKafka(nodes=3, directory=str(tmp_path / "cluster")).start()
    try:
        pids = kafka.pids
        assert len(pids) == 3 and not any(_gone(pid) for pid in pids)

        async def cluster() -> tuple[int, int]:
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic("replicated", num_partitions=2, replication_factor=3)])
                deadline = time.monotonic() + 30
                # the metadata may name the new topic before its partitions
                while not (partitions := (await admin.describe_topics(["replicated"]))[0]["partitions"]):
                    assert time.monotonic() < deadline, "the new topic's partitions never showed in the metadata"
                    await asyncio.sleep(0.1)
                return (len((await admin.describe_cluster())["brokers"]),
                        min(len(p["replicas"]) for p in partitions))
            finally:
                await admin.close()
        assert asyncio.run(cluster()) == (3, 3)
        assert kafka.active_controller() in kafka.members
    finally:
        kafka.stop()
    assert all(_gone(pid) for pid in pids)
    assert kafka.pids == []


def test_missing_java_or_maven_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither java nor mvn
    reason = missing_tools()
    assert reason is not None and "\n" not in reason and "java" in reason and "mvn" in reason
    with pytest.raises(ApacheKafkaUnavailable) as err:
        ApacheKafka().start()
    assert str(err.value) == reason


def test_a_failed_fetch_is_a_one_line_error_and_leaves_nothing(monkeypatch, tmp_path):
    """A Maven that fails (here one that cannot resolve anything) fails the fetch with one line
    naming the version and Maven's last word; no partial jar directory stays in the cache."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, script in (("java", "exit 0"),
                         ("mvn", "echo '[ERROR] Failed to execute goal: Could not resolve dependencies'; exit 1")):
        (tools / name).write_text(f"#!/bin/sh\n{script}\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    monkeypatch.setenv("TALKSTREAM_KAFKA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ApacheKafkaUnavailable) as err:
        fetch_jars()
    message = str(err.value)
    assert KAFKA_VERSION in message and "Could not resolve dependencies" in message and "\n" not in message
    assert [p.name for p in (tmp_path / "cache").rglob("*") if not p.name.startswith(".")] == [
        f"kafka-{KAFKA_VERSION}"]


@pytest.mark.kafka
def test_producers_use_normal_batches_on_apache_kafka(kafka):
    """The start-up self-check finds exact end offsets on Apache Kafka: no single-record batches."""
    assert broker_check.run_self_check(kafka.url) is True
    assert broker_check.single_record_batches("auto", kafka.url) is False


def test_the_embedded_broker_keeps_single_record_batches(broker):
    assert broker_check.single_record_batches("auto", broker.url) is True


@pytest.mark.kafka
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_table_recovery_is_exact_on_apache_kafka_with_normal_batches(kafka, tmp_path, unique, store, monkeypatch):
    """A changelog-backed table recovers exactly after a clean stop, kill -9 and a clean stop,
    with multi-record batches (the producer lingers to make them) and no protection."""
    monkeypatch.setenv("TALKSTREAM_STORE", store)
    observed = run_scenario(kafka, tmp_path, unique, "off", ["clean", "kill9", "clean"])
    assert len(observed) == 3
    for expected, recovered in observed:
        assert recovered == expected


def test_a_cluster_id_never_starts_with_a_dash():
    # 0xf8 encodes to "-" first in URL-safe base64; the storage tool would read it as an option
    draws = iter([b"\xf8" + bytes(15), b"\x01" * 16])
    made = cluster_id(lambda n: next(draws))
    assert made == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")


@pytest.mark.kafka
def test_a_port_taken_before_the_node_binds_it_is_replaced(tmp_path, monkeypatch):
    """A port picked free can be taken before the node binds it (another process picked it too):
    the cluster starts again on new ports instead of failing."""
    import socket

    from streams import apache_kafka

    require_apache_kafka()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    picked: list[int] = []

    def pick() -> int:  # the first port handed out is one another process holds
        picked.append(apache_kafka_free_port() if picked else taken.getsockname()[1])
        return picked[-1]
    apache_kafka_free_port = apache_kafka.free_port
    monkeypatch.setattr(apache_kafka, "free_port", pick)
    kafka = ApacheKafka(nodes=1, directory=str(tmp_path / "cluster"))
    try:
        kafka.start()
        assert len(picked) == 4  # two ports for the first start, two new ones for the second
        assert kafka.members[0].port not in picked[:2]
        assert kafka_api_versions_ok("127.0.0.1", kafka.members[0].port, timeout=5)
    finally:
        kafka.stop()
        taken.close()
