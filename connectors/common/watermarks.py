"""Durable poller watermarks, kept in Kafka (never in a local file).

One compacted topic, ``talkstream.watermarks``; key ``<system>.<entity>``,
value a JSON object owned by that poller (e.g. the last ``ModifiedAt`` and the
``Id``/``Version`` pairs already published at that exact time). A poller
``save()``s only after the broker acknowledged the events the watermark
covers, so the watermark never runs ahead of what was durably published.
"""
from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaProducer

from connectors.common.kafka import ensure_topics, read_all
from schemas import codec

WATERMARK_TOPIC = "talkstream.watermarks"


def watermark_key(system: str, entity: str) -> str:
    return f"{system}.{entity}"


class WatermarkStore:
    """Load and save poller watermarks on the watermark topic."""

    def __init__(self, bootstrap: str, producer: AIOKafkaProducer, topic: str = WATERMARK_TOPIC):
        self.bootstrap = bootstrap
        self.producer = producer
        self.topic = topic

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
        await fut
