"""The Customcrm change-feed poller: records since the watermark -> change events.

One poller per entity reads ``GET /api/v1/<resource>`` from its watermark to
the end of the feed and publishes one :class:`ChangeEvent` per record version
to ``customcrm.<entity>.changes``, keyed by ``Id``. After every page, and only
once the broker acknowledged that page's events (and dead letters), it saves
the watermark (key ``customcrm.<entity>``) to the watermark topic.

The watermark (``connectors.common.poller.Watermark``) marks the last
``ModifiedAt`` seen (its stream is the resource) and keeps the ``Id -> Version``
pairs already published at exactly that time, because ``modified_since`` is
inclusive: a record at the watermark time is neither missed nor published
twice. :func:`plan_page` (pure) makes that decision for one page.

Records that do not match the contract models become dead letters (stage
``poll``); the poller carries on. Delivery is at-least-once: a crash between
the broker's ack and the watermark save re-publishes that page on restart
(consumers dedupe by ``id`` + ``version``).

A ``pacer`` may hold a page before it is published (``streams.pacing``: a page
of orders waits, bounded, for the products it names to be linked); it is told
what was published and when a poll reached the end of its feed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, Sequence

from connectors.common.deadletters import DeadLetterSink
from connectors.common.poller import Poller, Watermark
from connectors.common.watermarks import WatermarkStore
from connectors.customcrm import resource_of
from connectors.customcrm.models import validate_record
from schemas.change import ChangeEvent
from schemas.deadletter import DeadLetter

log = logging.getLogger(__name__)

SYSTEM = "customcrm"


class Publisher(Protocol):
    async def publish(self, events: Sequence[ChangeEvent], **kw: Any) -> None: ...


class Pacer(Protocol):
    """When to publish a page (``streams.pacing``: orders wait for the products they name)."""

    def poll_started(self, system: str, entity: str) -> float: ...
    def poll_finished(self, system: str, entity: str, started: float) -> None: ...
    async def before_publish(self, system: str, entity: str, records: Sequence[Any], read_at: float) -> float: ...
    def published(self, system: str, entity: str, records: Sequence[Any]) -> None: ...


class NoPacing:
    """Publish every page at once."""

    def poll_started(self, system: str, entity: str) -> float:
        return 0.0

    def poll_finished(self, system: str, entity: str, started: float) -> None:
        pass

    async def before_publish(self, system: str, entity: str, records: Sequence[Any], read_at: float) -> float:
        return 0.0

    def published(self, system: str, entity: str, records: Sequence[Any]) -> None:
        pass


# --------------------------------------------------------------------------- pure parts


def canonical_time(value: Any) -> str | None:
    """An RFC 3339 time -> ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (sortable); None if not one."""
    if not isinstance(value, str) or len(value) < 20:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def covers(watermark: Watermark, stream: str, modified_at: str, rid: str | None, version: str | None) -> bool:
    """Was this record version already handled (published or dead-lettered)?"""
    mark = watermark.marks.get(stream)
    if mark is None:
        return False
    if modified_at < mark:
        return True
    return modified_at == mark and rid is not None and watermark.seen.get(rid) == version


def advance(watermark: Watermark, stream: str, modified_at: str, rid: str | None, version: str | None) -> Watermark:
    """The watermark after a record version: the newer ``ModifiedAt`` and the versions read at it."""
    mark = watermark.marks.get(stream)
    if mark is not None and modified_at < mark:
        return watermark
    seen = dict(watermark.seen) if modified_at == mark else {}
    if rid is not None:
        seen[rid] = version
    return Watermark({**watermark.marks, stream: modified_at}, seen)


@dataclass
class Invalid:
    record: Any
    record_id: str | None
    reason: str


@dataclass
class PagePlan:
    publish: list[dict] = field(default_factory=list)
    invalid: list[Invalid] = field(default_factory=list)
    skipped: int = 0
    watermark: Watermark = field(default_factory=Watermark)


def plan_page(resource: str, items: Sequence[Any], watermark: Watermark) -> PagePlan:
    """Which records of one feed page to publish, which to dead-letter, and the new watermark.

    A record is skipped when the watermark already covers its (``ModifiedAt``,
    ``Id``, ``Version``). A record that fails the contract model is
    dead-lettered; it still moves the watermark when its ``ModifiedAt`` is
    readable, so it is reported once, not on every poll.
    """
    plan = PagePlan(watermark=watermark)
    for item in items:
        rec = item if isinstance(item, dict) else {}
        rid = rec.get("Id") if isinstance(rec.get("Id"), str) else None
        version = str(rec["Version"]) if "Version" in rec else None
        modified_at = canonical_time(rec.get("ModifiedAt"))
        if modified_at is not None and covers(plan.watermark, resource, modified_at, rid, version):
            plan.skipped += 1
            continue
        errors = validate_record(resource, item)
        if errors:
            listed = "; ".join(f"{k}: {v}" for k, v in errors.items())
            plan.invalid.append(Invalid(
                item, rid,
                f"customcrm {resource} record {rid or '(no Id)'} version {version} "
                f"does not match the contract: {listed}",
            ))
        else:
            plan.publish.append(item)
        if modified_at is not None:
            plan.watermark = advance(plan.watermark, resource, modified_at, rid, version)
    return plan


def change_event(entity: str, record: dict) -> ChangeEvent:
    """The change event of one (valid) record version as read from the feed."""
    return ChangeEvent(
        system=SYSTEM,
        entity=entity,
        id=record["Id"],
        op="delete" if record.get("Deleted") else "upsert",
        version=str(record["Version"]),
        modified_at=datetime.fromisoformat(record["ModifiedAt"]),
        origin="poll",
        data=record,
    )


# --------------------------------------------------------------------------- the poller


class CustomcrmPoller(Poller):
    """Polls one Customcrm entity's change feed into its change topic."""

    system = SYSTEM

    def __init__(
        self,
        client: Any,
        publisher: Publisher,
        watermarks: WatermarkStore,
        entity: str,
        *,
        page_size: int = 500,
        dead_letters: DeadLetterSink | None = None,
        topic: str | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        super().__init__(entity, publisher, watermarks, dead_letters=dead_letters, topic=topic)
        self.client = client
        self.resource = resource_of(entity)
        self.page_size = min(max(1, page_size), 1000)  # the API's limit range
        self.pacer = pacer or NoPacing()

    def legacy_stream(self) -> str:
        return self.resource

    async def poll_once(self) -> int:
        """Read the feed from the watermark to its end, a page at a time; returns the number of
        events published."""
        wm = await self.watermark()
        started = self.pacer.poll_started(SYSTEM, self.entity)
        published = 0
        cursor: str | None = None
        while True:
            if cursor is None:
                items, cursor = await self.client.list_changes(
                    self.resource, modified_since=wm.marks.get(self.resource), limit=self.page_size)
            else:
                items, cursor = await self.client.list_changes(self.resource, limit=self.page_size, cursor=cursor)
            plan = plan_page(self.resource, items, wm)
            events = [change_event(self.entity, r) for r in plan.publish]
            if events:
                await self.pacer.before_publish(SYSTEM, self.entity, plan.publish, started)
            await self.commit(events, [self._dead_letter(bad) for bad in plan.invalid], plan.watermark)
            if events:
                self.pacer.published(SYSTEM, self.entity, plan.publish)
            wm = plan.watermark
            published += len(events)
            if not items or cursor is None:
                self.pacer.poll_finished(SYSTEM, self.entity, started)
                return published

    def _dead_letter(self, bad: Invalid) -> DeadLetter:
        return DeadLetter(stage="poll", system=SYSTEM, entity=self.entity, record_id=bad.record_id,
                          reason=bad.reason, error_type="validation_error", payload=bad.record)
