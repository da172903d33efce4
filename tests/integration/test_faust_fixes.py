"""The Faust fixes (``connectors.common.patches.faust_fixes``) against Apache Kafka with
aiokafka's real consumer, which Faust's consumer thread drives.

Faust's "seek back to the committed offsets" (after a rebalance, and whenever records came
while its flow was stopped) calls aiokafka's ``seek_to_committed``. For a partition with no
commit it does nothing: the partition goes on from where the fetcher got to, and the records
fetched and left while the flow was stopped are never handed over. Shown here on a real
broker; the fix seeks such a partition to its first offset.
"""
from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.common.kafka import ensure_topics, make_producer
from connectors.common.patches import faust_fixes

pytestmark = [pytest.mark.integration, pytest.mark.kafka]

RECORDS = 10


async def _fetched_ahead(bootstrap: str) -> tuple[AIOKafkaConsumer, TopicPartition]:
    """A group consumer that fetched every record of a fresh partition and committed nothing."""
    topic = f"fix-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, [topic])
    producer = make_producer(bootstrap, single_record_batches=False)
    await producer.start()
    try:
        for i in range(RECORDS):
            await (await producer.send(topic, b"%d" % i, partition=0))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{topic}-group", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    fetched = 0
    while fetched < RECORDS:
        fetched += sum(len(records) for records in (await consumer.getmany(tp, timeout_ms=1000)).values())
    assert await consumer.position(tp) == RECORDS
    return consumer, tp


async def test_aiokafkas_seek_to_committed_leaves_an_uncommitted_partition_ahead(kafka):
    """What the fix is for: without it the records fetched before any commit are skipped."""
    consumer, tp = await _fetched_ahead(kafka.bootstrap)
    try:
        committed = await consumer.seek_to_committed()
        assert committed[tp] is None
        assert await consumer.position(tp) == RECORDS  # records 0-9 would never be handed over again
    finally:
        await consumer.stop()


async def test_the_fix_seeks_an_uncommitted_partition_to_its_first_offset(kafka):
    consumer, tp = await _fetched_ahead(kafka.bootstrap)
    try:
        committed = await faust_fixes._seek_to_committed_or_beginning(consumer)
        assert committed[tp] is None  # what Faust records: nothing committed
        assert await consumer.position(tp) == 0
        again = []
        while len(again) < RECORDS:
            again += [r.value for r in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])]
        assert again == [b"%d" % i for i in range(RECORDS)]
    finally:
        await consumer.stop()
