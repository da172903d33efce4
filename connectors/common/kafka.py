"""Kafka plumbing shared by pollers, sinks, the CLI and tests (aiokafka).

Everything that produces goes through :func:`make_producer`, which applies the
single-record-batch protection needed on the embedded broker: Tansu reports a
partition's end offset as the base offset of the last batch + 1, so only with
one record per batch are the end offsets exact. Exact end offsets matter only
on topics that are read up to their end: Faust's table changelogs (recovery
stops at the end offset) and the compacted topics declared with
:func:`read_to_end`. With the embedded broker's workaround in the process (``patches.embedded_broker``), every other
topic (change events, flow events, commands, dead letters) is sent in normal
batches even while the protection is on: ten times the messages per second on
the embedded broker. Readers of those topics never trust an end offset as the
last record (:func:`read_all`, :func:`true_end_offsets`).
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any, Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.change import ChangeEvent

#: aiokafka's batch builder always accepts the first record of a batch, so a
#: 1-byte batch limit means exactly one record per batch.
SINGLE_RECORD_BATCH_SIZE = 1

#: Batch limit for the topics that need no exact end offsets (aiokafka's default).
BATCH_SIZE = 16384

_read_to_end: set[str] = set()


def read_to_end(topic: str) -> str:
    """Declare a topic that is read up to its end offset (it keeps one record per batch under the
    protection); returns the name."""
    _read_to_end.add(topic)
    return topic


def one_record_per_batch(topic: str) -> bool:
    """Does ``topic`` need exact end offsets: a Faust table changelog or a topic declared with
    :func:`read_to_end`?"""
    return topic.endswith("-changelog") or topic in _read_to_end


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://a:1;b:2`` (Faust style) -> ``a:1,b:2`` (aiokafka style)."""
    hosts = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part.startswith("kafka://"):
            part = part[len("kafka://"):]
        if part:
            hosts.append(part)
    return ",".join(hosts)


def make_producer(bootstrap: str, *, single_record_batches: bool, **kwargs) -> AIOKafkaProducer:
    """An aiokafka producer, acks=all, with single-record batches when asked (for a broker whose
    end offsets are wrong: the embedded broker's workaround is then installed, which keeps them
    to the topics read to their end)."""
    opts = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    if single_record_batches:
        from connectors.common.patches import embedded_broker

        embedded_broker.apply(single_record_batches=True)
        opts["max_batch_size"] = SINGLE_RECORD_BATCH_SIZE
    opts.update(kwargs)
    return AIOKafkaProducer(**opts)


#: The replication factor of every topic this process creates (``set_replication_factor``).
_replication_factor = 1


def set_replication_factor(factor: int) -> None:
    """Every topic talkstream creates from now on in this process gets ``factor`` replicas, and
    ``min.insync.replicas`` one less (at least 1): with acks=all, a write is acknowledged once
    all in-sync replicas have it, and a topic stays writable with one broker down."""
    global _replication_factor
    _replication_factor = max(1, factor)


def replication_factor() -> int:
    return _replication_factor


def durability_configs(factor: int) -> dict[str, str]:
    """The topic configs that go with ``factor`` replicas: ``min.insync.replicas`` one less, at
    least 1 (nothing for one replica: the broker's default, 1)."""
    return {"min.insync.replicas": str(max(1, factor - 1))} if factor > 1 else {}


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int = 1,
    compact: Iterable[str] = (),
    replication: int | None = None,
    configs: dict[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet (Tansu does not auto-create), with ``replication``
    replicas (default: the process's ``set_replication_factor``) and ``configs`` (every one of
    ``names``)."""
    compact = set(compact)
    factor = replication or _replication_factor
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=factor,
                topic_configs={**durability_configs(factor),
                               **({"cleanup.policy": "compact"} if name in compact else {}),
                               **(configs or {})},
            )
            for name in dict.fromkeys(names)
            if name not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(list(names))
    finally:
        await admin.close()


class KafkaPublisher:
    """Publishes change events and returns only once the broker acknowledged all of them."""

    def __init__(self, producer: AIOKafkaProducer):
        self.producer = producer

    async def publish(self, events: Sequence[ChangeEvent], *, topic: str | None = None) -> None:
        """``topic`` overrides each event's own topic (e.g. a per-test topic)."""
        futures = [
            await self.producer.send(topic or e.topic, e.to_bytes(), key=e.key) for e in events
        ]
        if futures:
            await asyncio.gather(*futures)


async def publish_events(publisher: Any, events: Sequence[ChangeEvent], topic: str | None = None) -> None:
    """Publish through ``publisher`` (a ``KafkaPublisher``, or a stand-in without ``topic``), to ``topic``
    when it is not the events' own (tests, per-deployment naming); returns after the broker's ack."""
    if not events:
        return
    if topic is None or all(e.topic == topic for e in events):
        await publisher.publish(events)
    else:
        await publisher.publish(events, topic=topic)


async def partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of a topic, refreshing the consumer's metadata once when it does not know them."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call
        parts = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> end offset (high watermark) of a topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await partitions(consumer, topic)
        offs = await consumer.end_offsets(tps) if tps else {}
        return {tp.partition: off for tp, off in offs.items()}
    finally:
        await consumer.stop()


async def read_all(
    bootstrap: str, topic: str, *, timeout: float = 30.0
) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record of ``topic`` from offset 0 to (at least) the current end offsets.

    Returns ``(partition, offset, key, value)`` tuples in per-partition order.
    A partition is read until aiokafka's position reaches the reported end
    offset, keeping every record fetched: on the embedded broker the reported
    end is the last batch's base offset + 1, and the fetch of that offset
    returns the whole batch.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_wait_ms=50,  # the embedded broker holds an empty fetch for the full wait
    )
    await consumer.start()
    out: list[tuple[int, int, bytes | None, bytes | None]] = []
    try:
        tps = await partitions(consumer, topic)
        if not tps:
            return out
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while remaining:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end offsets within {timeout} s")
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                out.extend((tp.partition, r.offset, r.key, r.value) for r in records)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def true_end_offsets(bootstrap: str, tps: Sequence[TopicPartition],
                           *, timeout: float = 5.0) -> dict[TopicPartition, int]:
    """End offsets that are exact on the embedded broker too: each non-empty partition's last
    batch is fetched from the reported end - 1 (its base offset there; the last record on
    Apache Kafka) and the end is the offset after its last record. A partition whose last
    batch does not come within ``timeout`` keeps its reported end offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(tps)) if tps else {}
        pending = {tp for tp in tps if ends[tp] > 0}
        if not pending:
            return dict(ends)
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, ends[tp] - 1)
        exact = dict(ends)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for tp, records in batch.items():
                if records:
                    exact[tp] = max(exact[tp], records[-1].offset + 1)
                    pending.discard(tp)
        return exact
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def _selfcheck_topic(bootstrap: str):
    """A throw-away one-partition topic for a start-up check, deleted after it (best effort)."""
    topic = f"talkstream.selfcheck.{uuid.uuid4().hex[:12]}"
    await ensure_topics(bootstrap, [topic], replication=1)  # thrown away at once
    try:
        yield topic
    finally:
        try:
            await delete_topics(bootstrap, [topic])
        except Exception:  # best effort: Tansu may not delete
            pass


async def end_offsets_are_exact(bootstrap: str, records: int = 20) -> bool:
    """Start-up self-check: does the broker report exact end offsets for multi-record batches?

    Produces ``records`` small records in one batch to a throw-away topic and
    compares the reported end offset with the number written.
    """
    async with _selfcheck_topic(bootstrap) as topic:
        producer = make_producer(bootstrap, single_record_batches=False, linger_ms=50)
        await producer.start()
        try:
            futures = [await producer.send(topic, b"x" * 16, key=b"k", partition=0) for _ in range(records)]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        ends = await end_offsets(bootstrap, topic)
        return ends.get(0) == records


async def idle_fetch_waits_out(bootstrap: str, wait_ms: int = 600) -> bool:
    """Start-up check: does a fetch that waits for data wait its whole ``fetch_max_wait_ms``
    even when a record arrives meanwhile? (Tansu does; Apache Kafka answers at once.)
    Follows a throw-away topic, sends one record 0.1 s into a waiting fetch, and times how
    long it took to be fetched (about 0.6 s on Tansu, 0.005 s on Apache Kafka)."""
    loop = asyncio.get_running_loop()
    async with _selfcheck_topic(bootstrap) as topic:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                    fetch_max_wait_ms=wait_ms, auto_offset_reset="earliest")
        producer = make_producer(bootstrap, single_record_batches=False)
        await consumer.start()
        await producer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)

            async def round_trip(delay: float) -> float:
                """Seconds from a record's send (``delay`` after now) until it was fetched."""
                async def send_later() -> float:
                    await asyncio.sleep(delay)
                    sent = loop.time()
                    await (await producer.send(topic, b"x", partition=0))
                    return sent
                sending = asyncio.ensure_future(send_later())
                got = {}
                while not got:
                    got = await consumer.getmany(tp, timeout_ms=wait_ms * 3)
                return loop.time() - await sending
            await round_trip(0)  # the first fetch of a partition may be answered at once
            # the next fetch waits for data: answered as the record comes (Apache Kafka: a few
            # ms), or when its wait runs out (Tansu: seen from a third to all of it)
            return await round_trip(0.1) > 0.25 * wait_ms / 1000
        finally:
            await producer.stop()
            await consumer.stop()


async def first_generation(bootstrap: str) -> int:
    """Start-up check: the generation a new consumer group's first member gets (the Kafka
    protocol starts at 1; Tansu at 0, which aiokafka treats as "never joined")."""
    async with _selfcheck_topic(bootstrap) as topic:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"{topic}.group",
                                    enable_auto_commit=False, session_timeout_ms=6000,
                                    heartbeat_interval_ms=1000)
        await consumer.start()
        try:
            await consumer.getmany(timeout_ms=100)
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=100)
            return consumer._coordinator.generation  # noqa: SLF001 - aiokafka has no public call
        finally:
            await consumer.stop()


async def several_batches_per_request(bootstrap: str, batches: int = 3) -> bool:
    """Start-up check: does the broker take several record batches of one partition in one
    produce request, give them consecutive offsets and keep its end offset exact?

    Tansu does (its produce answer names the first batch's offset). Apache Kafka refuses
    such a request (one batch per partition since produce v3), and there talkstream sends
    normal batches anyway. Sends one raw produce request to a throw-away topic.
    """
    import time

    from aiokafka.client import AIOKafkaClient
    from aiokafka.protocol.produce import ProduceRequest
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    def one_record_batch(value: bytes) -> bytes:
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                            producer_epoch=-1, base_sequence=-1, batch_size=1024)
        builder.append(0, timestamp=int(time.time() * 1000), key=b"k", value=value, headers=[])
        return bytes(builder.build())

    async with _selfcheck_topic(bootstrap) as topic:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        try:
            await client.force_metadata_update()
            leader = client.cluster.leader_for_partition(TopicPartition(topic, 0))
            data = b"".join(one_record_batch(b"%d" % i) for i in range(batches))
            answer = await client.send(leader, ProduceRequest(required_acks=-1, timeout=10000,
                                                              topics=[(topic, [(0, data)])], transactional_id=None))
        finally:
            await client.close()
        if answer.topics[0][1][0][1] != 0:  # the partition's error code
            return False
        if await end_offsets(bootstrap, topic) != {0: batches}:
            return False
        stored = [(offset, value) for _partition, offset, _key, value in await read_all(bootstrap, topic, timeout=5)]
        return stored == [(i, b"%d" % i) for i in range(batches)]
