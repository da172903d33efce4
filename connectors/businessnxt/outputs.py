"""Kafka outputs shared by the Businessnxt poller and webhook receiver:
change events (to their contract topic, or an override for tests and
per-deployment naming) and dead letters. Each call returns only after the
broker acknowledged every record.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol, Sequence

from schemas.change import ChangeEvent
from schemas.deadletter import DEADLETTER_TOPIC, DeadLetter

log = logging.getLogger(__name__)


class DeadLetterSink(Protocol):
    """Same protocol as the Customcrm poller's and ``streams.runtime.DeadLetterPublisher``."""

    async def publish(self, entry: DeadLetter) -> None: ...


class KafkaDeadLetters:
    """Dead letters to ``talkstream.deadletters`` (or ``topic``), keyed by record id."""

    def __init__(self, producer: Any, topic: str = DEADLETTER_TOPIC) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, entry: DeadLetter) -> None:
        key = (entry.link_key or entry.record_id or entry.id).encode()
        await (await self.producer.send(self.topic, entry.to_bytes(), key=key))


async def publish_events(publisher: Any, events: Sequence[ChangeEvent], topic: str | None = None) -> None:
    """Publish through ``publisher`` (a ``KafkaPublisher``), to ``topic`` when it is not the events' own."""
    if not events:
        return
    if topic is None or all(e.topic == topic for e in events):
        await publisher.publish(events)
    else:
        await publisher.publish(events, topic=topic)


async def dead_letter(sink: DeadLetterSink | None, letters: Sequence[DeadLetter]) -> None:
    for dl in letters:
        if sink is None:
            log.warning("dead letter without a sink (%s %s.%s %s): %s", dl.stage, dl.system, dl.entity,
                        dl.record_id, dl.reason)
        else:
            await sink.publish(dl)
