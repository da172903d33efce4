"""Dead letters: the one way every stage publishes them (pollers, the webhook, the link and sink stages).

A dead letter (``schemas.deadletter``) goes to ``talkstream.deadletters`` keyed by
its link key, else its record's id, else its own id, and is logged with its stage,
record and reason. How it is sent is the caller's: a producer that waits for the
broker's acknowledgement (``acked_send``: pollers and the webhook, which save a
watermark or answer a request after it) or a Faust topic (the agents, whose
sends are flushed before their offsets are committed).
"""
from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Protocol, Sequence

from schemas.deadletter import DEADLETTER_TOPIC, DeadLetter

log = logging.getLogger("talkstream.deadletters")

#: Sends one message (key, value) to the dead-letter topic.
Send = Callable[[bytes, bytes], Awaitable[Any]]


class DeadLetterSink(Protocol):
    """What a connector is given to publish its dead letters with."""

    async def publish(self, entry: DeadLetter) -> None: ...


def key_of(entry: DeadLetter) -> bytes:
    return (entry.link_key or entry.record_id or entry.id).encode()


class DeadLetters:
    """Publishes dead letters through ``send``; ``counted`` (a metric) sees each one."""

    def __init__(self, send: Send, *, counted: Callable[[DeadLetter], None] | None = None) -> None:
        self._send = send
        self._counted = counted

    async def publish(self, entry: DeadLetter) -> None:
        log.warning("dead letter [%s] %s: %s", entry.stage,
                    entry.link_key or entry.record_id or f"{entry.system or ''} {entry.entity or ''}".strip(),
                    entry.reason)
        if self._counted is not None:
            self._counted(entry)
        await self._send(key_of(entry), entry.to_bytes())


def acked_send(producer: Any, topic: str = DEADLETTER_TOPIC) -> Send:
    """A ``Send`` through an aiokafka producer that returns once the broker acknowledged the record."""
    async def send(key: bytes, value: bytes) -> None:
        await (await producer.send(topic, value, key=key))
    return send


async def publish_all(sink: DeadLetterSink | None, entries: Sequence[DeadLetter]) -> None:
    """Publish ``entries`` through ``sink``; without one (a connector used on its own), log them."""
    for entry in entries:
        if sink is None:
            log.warning("dead letter without a sink [%s] %s %s %s: %s", entry.stage, entry.system, entry.entity,
                        entry.record_id, entry.reason)
        else:
            await sink.publish(entry)
