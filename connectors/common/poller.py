"""The one poller contract, and the one watermark shape every poller keeps.

A poller reads what changed in its system since its watermark, publishes a change
event per record version to its change topic, dead-letters the records that do not
match the contract, and saves the new watermark only after the broker
acknowledged all of that (``Poller.commit``: the rule, written once). A crash
between the acknowledgement and the save makes the next poll publish those
records again: delivery is at least once, and consumers deduplicate by id and
version. ``CustomcrmPoller`` and ``BusinessnxtPoller`` say how to read their
system; everything else is here.

A ``Watermark`` (saved as JSON on ``talkstream.watermarks``, key
``<system>.<entity>``):

- ``marks``: per stream read (a Customcrm resource, a Business NXT table) the
  newest change time read, in that system's own format (Customcrm: UTC ISO;
  Business NXT: server-local time);
- ``seen``: record key -> version of the records the next read returns again
  (reads start at the marks, inclusive), so those are published again only when
  their version changed;
- ``scan``: a first full read's progress (the last key read), None once done.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

from connectors.common.deadletters import DeadLetterSink, publish_all
from connectors.common.kafka import publish_events
from connectors.common.watermarks import WatermarkStore, watermark_key
from schemas.change import ChangeEvent
from schemas.deadletter import DeadLetter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watermark:
    marks: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str | None] = field(default_factory=dict)
    scan: dict[str, Any] | None = None

    #: the saved shape's version (1: Business NXT's ``tables``; none: Customcrm's ``modified_at``)
    VERSION = 2

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": self.VERSION, "marks": dict(self.marks), "seen": dict(self.seen)}
        if self.scan is not None:
            out["scan"] = dict(self.scan)
        return out

    @classmethod
    def from_json(cls, value: dict[str, Any] | None, *, stream: str | None = None) -> "Watermark":
        """A saved watermark (None: none yet, or reset); also the shapes saved before there was one
        shape: Business NXT's ``{"v": 1, "tables", "seen", "scan"}`` and Customcrm's
        ``{"modified_at", "seen"}`` (its one mark becomes ``stream``'s)."""
        if not value:
            return cls()
        seen = dict(value.get("seen") or {})
        scan = dict(value["scan"]) if value.get("scan") else None
        if value.get("v") == cls.VERSION:
            return cls(dict(value.get("marks") or {}), seen, scan)
        if value.get("v") == 1:
            return cls(dict(value.get("tables") or {}), seen, scan)
        if "modified_at" in value:
            mark = value.get("modified_at")
            return cls({stream: mark} if mark and stream else {}, seen)
        return cls()


class Poller:
    """What every poller shares: its watermark (loaded once, cached), the commit rule, reset."""

    system: str = ""

    def __init__(self, entity: str, publisher: Any, watermarks: WatermarkStore, *,
                 dead_letters: DeadLetterSink | None = None, topic: str | None = None) -> None:
        self.entity = entity
        self.publisher = publisher
        self.watermarks = watermarks
        self.dead_letters = dead_letters
        self.topic = topic  # an override of <system>.<entity>.changes (tests, per-deployment naming)
        self.key = watermark_key(self.system, entity)
        self._watermark: Watermark | None = None

    #: the stream an old single-mark watermark belongs to (``Watermark.from_json``)
    def legacy_stream(self) -> str | None:
        return None

    async def watermark(self) -> Watermark:
        """The current watermark (loaded from Kafka on first use)."""
        if self._watermark is None:
            self._watermark = Watermark.from_json(await self.watermarks.load(self.key),
                                                  stream=self.legacy_stream())
        return self._watermark

    async def commit(self, events: Sequence[ChangeEvent], letters: Sequence[DeadLetter],
                     watermark: Watermark) -> None:
        """Publish, dead-letter, and only after the broker acknowledged both save the watermark."""
        await publish_events(self.publisher, events, self.topic)
        await publish_all(self.dead_letters, letters)
        if watermark != self._watermark:
            await self.watermarks.save(self.key, watermark.to_json())
        self._watermark = watermark

    async def poll_once(self) -> int:
        """Read what changed since the watermark, commit it; returns the events published."""
        raise NotImplementedError

    def invalidate(self) -> None:
        """Forget the cached watermark: the next poll loads it from Kafka again (after a resync)."""
        self._watermark = None

    async def reset(self) -> None:
        """Forget the watermark (tombstone): the next poll reads everything again."""
        await self.watermarks.save(self.key, None)
        self._watermark = Watermark()
