"""Kafka outputs shared by the Businessnxt poller and webhook receiver:
change events (to their contract topic, or an override for tests and
per-deployment naming) and dead letters. Each call returns only after the
broker acknowledged every record.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol, Sequence

from schemas.change import ChangeEvent
from schemas.deadletter import DEADLETTER_TOPIC, DeadLetter

log = logging.getLogger(__name__)


class DeadLetterSink(Protocol):
    async def publish(self, letters: Sequence[DeadLetter]) -> None: ...


class KafkaDeadLetters:
    """Dead letters to ``talkstream.deadletters`` (or ``topic``), keyed by record id."""

    def __init__(self, producer: Any, topic: str = DEADLETTER_TOPIC) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        futures = [await self.producer.send(self.topic, dl.to_bytes(), key=(dl.record_id or dl.id).encode())
                   for dl in letters]
        if futures:
            await asyncio.gather(*futures)


async def publish_events(publisher: Any, events: Sequence[ChangeEvent], topic: str | None = None) -> None:
    """Publish through ``publisher`` (a ``KafkaPublisher``), to ``topic`` when given."""
    if not events:
        return
    if topic is None or all(e.topic == topic for e in events):
        await publisher.publish(events)
        return
    producer = publisher.producer
    futures = [await producer.send(topic, e.to_bytes(), key=e.key) for e in events]
    await asyncio.gather(*futures)


async def dead_letter(sink: DeadLetterSink | None, letters: Sequence[DeadLetter]) -> None:
    if not letters:
        return
    for dl in letters:
        log.warning("dead letter (%s %s.%s %s): %s", dl.stage, dl.system, dl.entity, dl.record_id, dl.reason)
    if sink is not None:
        await sink.publish(letters)
