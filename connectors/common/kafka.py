"""Kafka plumbing shared by pollers, sinks, the CLI and tests (aiokafka).

Everything that produces goes through :func:`make_producer`, which applies the
single-record-batch protection needed on the embedded broker (Tansu reports a
partition's end offset as the base offset of the last batch + 1; with one
record per batch the end offsets are exact).
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.change import ChangeEvent

#: aiokafka's batch builder always accepts the first record of a batch, so a
#: 1-byte batch limit means exactly one record per batch.
SINGLE_RECORD_BATCH_SIZE = 1


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
    """An aiokafka producer, acks=all, with single-record batches when asked."""
    opts = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    if single_record_batches:
        opts["max_batch_size"] = SINGLE_RECORD_BATCH_SIZE
    opts.update(kwargs)
    return AIOKafkaProducer(**opts)


async def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    *,
    partitions: int = 1,
    compact: Iterable[str] = (),
) -> None:
    """Create the topics that do not exist yet (Tansu does not auto-create)."""
    compact = set(compact)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=1,
                topic_configs={"cleanup.policy": "compact"} if name in compact else {},
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
    """Every record of ``topic`` from offset 0 to the current end offsets.

    Returns ``(partition, offset, key, value)`` tuples in per-partition order.
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
                for r in records:
                    if r.offset < ends[tp]:
                        out.append((tp.partition, r.offset, r.key, r.value))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def end_offsets_are_exact(bootstrap: str, records: int = 20) -> bool:
    """Start-up self-check: does the broker report exact end offsets for multi-record batches?

    Produces ``records`` small records in one batch to a throw-away topic and
    compares the reported end offset with the number written.
    """
    topic = f"talkstream.selfcheck.{uuid.uuid4().hex[:12]}"
    await ensure_topics(bootstrap, [topic])
    producer = make_producer(bootstrap, single_record_batches=False, linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(topic, b"x" * 16, key=b"k", partition=0) for _ in range(records)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    try:
        ends = await end_offsets(bootstrap, topic)
        return ends.get(0) == records
    finally:
        try:
            await delete_topics(bootstrap, [topic])
        except Exception:  # best effort: Tansu may not delete
            pass
