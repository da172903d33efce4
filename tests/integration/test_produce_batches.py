"""Several single-record batches of one partition in one produce request, on the embedded broker.

aiokafka keeps one produce request in flight per broker with one batch per
partition, so a changelog partition (one record per batch under the embedded
broker's protection) got one record per round trip. Tansu takes several
batches of a partition in one request; ``patches.embedded_broker`` then sends up to
``set_batches_per_request`` of them together. Each record must still get its
own offset, in order, and the end offsets must stay exact.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from aiokafka.producer.sender import SendProduceReqHandler

from connectors.common import patches
from connectors.common.patches import embedded_broker
from connectors.common.kafka import end_offsets, ensure_topics, make_producer, read_all, several_batches_per_request

pytestmark = pytest.mark.integration

RECORDS = 600


async def test_the_embedded_broker_takes_several_batches_of_a_partition_in_one_request(broker):
    assert await several_batches_per_request(broker.bootstrap)


async def _produce(bootstrap: str, topic: str, per_request: int, monkeypatch) -> tuple[list, int]:
    requests = 0
    original = SendProduceReqHandler.create_request

    def counting(self):
        nonlocal requests
        requests += 1
        return original(self)

    monkeypatch.setattr(SendProduceReqHandler, "create_request", counting)
    patches.apply()
    embedded_broker.set_batches_per_request(per_request)
    try:
        producer = make_producer(bootstrap, single_record_batches=True)
        await producer.start()
        try:
            futures = [await producer.send(topic, b"%d" % i, key=b"k", partition=i % 2) for i in range(RECORDS)]
            metadata = await asyncio.gather(*futures)
        finally:
            await producer.stop()
    finally:
        embedded_broker.set_batches_per_request(1)
    return metadata, requests


async def test_records_sent_several_batches_per_request_keep_their_order_offsets_and_end(broker, unique,
                                                                                       monkeypatch):
    topic = f"{unique}-links-changelog"  # a changelog: one record per batch under the protection
    await ensure_topics(broker.bootstrap, [topic], partitions=2)
    metadata, requests = await _produce(broker.bootstrap, topic, 32, monkeypatch)
    # each send was answered with its own offset, in the order of the sends
    offsets = defaultdict(list)
    for i, meta in enumerate(metadata):
        offsets[i % 2].append(meta.offset)
    assert offsets == {0: list(range(RECORDS // 2)), 1: list(range(RECORDS // 2))}
    # the records are there, in order, and the end offsets are exact (table recovery relies on them)
    stored = defaultdict(list)
    for partition, offset, _key, value in await read_all(broker.bootstrap, topic, timeout=30):
        stored[partition].append((offset, value))
    assert stored == {p: [(n, b"%d" % (2 * n + p)) for n in range(RECORDS // 2)] for p in (0, 1)}
    assert await end_offsets(broker.bootstrap, topic) == {0: RECORDS // 2, 1: RECORDS // 2}
    # and the records went in far fewer requests than one per record
    assert requests <= RECORDS // 8, requests


async def test_without_it_a_partition_gets_one_record_per_request(broker, unique, monkeypatch):
    topic = f"{unique}-links-changelog"
    await ensure_topics(broker.bootstrap, [topic], partitions=2)
    _metadata, requests = await _produce(broker.bootstrap, topic, 1, monkeypatch)
    assert requests >= RECORDS // 2  # two partitions: at most two records per request
