"""Change events out of the Businessnxt poller and webhook receiver: to their contract topic,
or an override for tests and per-deployment naming. Each call returns only after the broker
acknowledged every record. (Their dead letters: ``connectors.common.deadletters``.)
"""
from __future__ import annotations

from typing import Any, Sequence

from schemas.change import ChangeEvent


async def publish_events(publisher: Any, events: Sequence[ChangeEvent], topic: str | None = None) -> None:
    """Publish through ``publisher`` (a ``KafkaPublisher``), to ``topic`` when it is not the events' own."""
    if not events:
        return
    if topic is None or all(e.topic == topic for e in events):
        await publisher.publish(events)
    else:
        await publisher.publish(events, topic=topic)

