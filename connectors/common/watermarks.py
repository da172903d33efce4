"""Durable poller watermarks, kept in Kafka (never in a local file).

One compacted topic, ``talkstream.watermarks``; key ``<system>.<entity>``,
value a JSON object owned by that poller (e.g. the last ``ModifiedAt`` and the
``Id``/``Version`` pairs already published at that exact time). A poller
``save()``s only after the broker acknowledged the events the watermark
covers, so the watermark never runs ahead of what was durably published.
"""
from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from connectors.common.kafka import ensure_topics, read_all, read_to_end
from schemas import codec

WATERMARK_TOPIC = read_to_end("talkstream.watermarks")


def watermark_key(system: str, entity: str) -> str:
    return f"{system}.{entity}"


class WatermarkStore:
    """Load and save poller watermarks on the watermark topic."""

    def __init__(self, bootstrap: str, producer: AIOKafkaProducer, topic: str = WATERMARK_TOPIC):
        self.bootstrap = bootstrap
        self.producer = producer
        self.topic = topic
        self._expected_end: int | None = None  # end offset after our own latest save
        self._consumer: AIOKafkaConsumer | None = None

    async def ensure(self) -> None:
        await ensure_topics(self.bootstrap, [self.topic], compact=[self.topic])

    async def load_all(self) -> dict[str, dict[str, Any] | None]:
        """Latest watermark of every poller (``None`` = reset by ``resync``)."""
        await self.ensure()
        latest: dict[str, dict[str, Any] | None] = {}
        for _p, _o, key, value in await read_all(self.bootstrap, self.topic):
            if key is None:
                continue
            latest[key.decode()] = codec.loads(value) if value else None
        return latest

    async def load(self, key: str) -> dict[str, Any] | None:
        return (await self.load_all()).get(key)

    async def save(self, key: str, value: dict[str, Any] | None) -> None:
        """Persist a watermark; returns once the broker acknowledged it.

        ``None`` writes a tombstone: the poller starts over with a full read.
        """
        payload = codec.dumps(value) if value is not None else None
        fut = await self.producer.send(self.topic, payload, key=key.encode())
        meta = await fut
        if meta is not None and meta.partition == 0:
            self._expected_end = max(self._expected_end or 0, meta.offset + 1)

    async def changed_elsewhere(self) -> bool:
        """Did someone else (``talkstream resync``) write a watermark since our last save?

        Cheap: one ListOffsets request. The first call only records the position.
        """
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        end = (await self._consumer.end_offsets([tp]))[tp]
        if self._expected_end is None:
            self._expected_end = end
            return False
        if end > self._expected_end:
            self._expected_end = end
            return True
        return False

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
