"""Which topics keep one record per produce batch under the embedded broker's protection.

Only topics read up to their end offset need exact end offsets: Faust's table
changelogs and the compacted topics declared with ``read_to_end``. The
accumulator (``connectors.common.patches.embedded_broker``) gives every other topic
normal batches. Checked on aiokafka's real accumulator, without a broker.
"""
from __future__ import annotations

import asyncio

import pytest
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

from connectors.common import patches
from connectors.common.patches import embedded_broker
from connectors.common.kafka import BATCH_SIZE, SINGLE_RECORD_BATCH_SIZE, one_record_per_batch
from connectors.common.watermarks import WATERMARK_TOPIC
from schemas.deadletter import DEADLETTER_TOPIC
from streams.refs import REFS_TOPIC
from streams.topics import FLOW_EVENTS


@pytest.mark.parametrize("topic", ["talkstream-links-changelog", "e2e-1a2b3c-routes-changelog", REFS_TOPIC,
                                   WATERMARK_TOPIC])
def test_changelogs_and_topics_read_to_their_end_keep_one_record_per_batch(topic):
    assert one_record_per_batch(topic)


@pytest.mark.parametrize("topic", ["customcrm.order.changes", "businessnxt.product.changes", FLOW_EVENTS,
                                   "talkstream.businessnxt.order.commands", DEADLETTER_TOPIC])
def test_stream_topics_are_batched(topic):
    assert not one_record_per_batch(topic)


def _records_in_first_batch(batch_size: int, topic: str) -> int:
    """Records one builder of the patched accumulator takes for ``topic`` before it is full."""
    async def go() -> int:
        accumulator = MessageAccumulator(None, batch_size, 0, 30)
        builder = embedded_broker.create_builder(accumulator, TopicPartition(topic, 0))
        count = 0
        while count < 1000 and builder.append(key=b"k", value=b"v" * 100, timestamp=None) is not None:
            count += 1
        assert accumulator._batch_size == batch_size  # the configured limit is left as it was
        return count
    return asyncio.run(go())


def test_protection_on_batches_stream_topics_only():
    assert _records_in_first_batch(SINGLE_RECORD_BATCH_SIZE, "talkstream-links-changelog") == 1
    assert _records_in_first_batch(SINGLE_RECORD_BATCH_SIZE, REFS_TOPIC) == 1
    assert 10 < _records_in_first_batch(SINGLE_RECORD_BATCH_SIZE, FLOW_EVENTS) < 1000


def test_protection_off_leaves_the_configured_batch_size_everywhere():
    assert _records_in_first_batch(BATCH_SIZE, "talkstream-links-changelog") == \
        _records_in_first_batch(BATCH_SIZE, FLOW_EVENTS) > 10


def _queued_before_send_waits(batch_size: int, topic: str, value: bytes) -> int:
    """Full batches the patched ``add_message`` queues for one partition before ``send()`` has to wait."""
    async def go() -> int:
        accumulator = MessageAccumulator(None, batch_size, 0, 30)
        tp = TopicPartition(topic, 0)
        for _ in range(1000):
            try:
                await asyncio.wait_for(embedded_broker.add_message(accumulator, tp, b"k", value, 30), timeout=0.05)
            except asyncio.TimeoutError:  # waiting for the sender (there is none): the queue is full
                break
        return len(accumulator._batches[tp])
    return asyncio.run(go())


def test_many_single_record_batches_queue_but_few_normal_ones():
    """Single-record batches need a deep queue (one message each); a deep queue of normal batches
    (16 KB, or one flow-topic batch message of ~50 KB each) only holds memory."""
    assert _queued_before_send_waits(SINGLE_RECORD_BATCH_SIZE, "talkstream-links-changelog", b"v" * 100) == \
        embedded_broker.QUEUED_BATCHES_PER_PARTITION
    assert _queued_before_send_waits(SINGLE_RECORD_BATCH_SIZE, FLOW_EVENTS, b"v" * 50_000) == \
        embedded_broker.QUEUED_FULL_BATCHES
    assert _queued_before_send_waits(BATCH_SIZE, "talkstream-links-changelog", b"v" * 1000) == \
        embedded_broker.QUEUED_FULL_BATCHES


def test_the_changelog_writes_of_a_flow_batch_fit_faust_producer_buffer():
    """A flow-topic batch writes up to BATCH_MEMBERS links in one event; Faust stops the streams
    (and warns "producer buffer full") once its buffer holds more than ``max_messages``."""
    from faust.transport.producer import ProducerBuffer

    from streams.flowmessages import BATCH_MEMBERS

    patches.apply()
    assert ProducerBuffer.max_messages >= 5 * BATCH_MEMBERS
