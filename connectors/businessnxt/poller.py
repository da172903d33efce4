"""Businessnxt poller: incremental reads of one entity (``order`` with its
lines, or ``product``) into ``businessnxt.<entity>.changes``.

Rules (same as the Customcrm poller):

- Incremental reads use ``changedTimestamp _gte <watermark>`` ordered by
  (changedTimestamp, key). Pages are taken by *keyset* (``(ts, key) >
  last``), not by the server's positional cursors, because a position shifts
  when rows change between two page requests and a row would be skipped.
- The first read (no watermark) scans every row by key, so legacy rows with
  null timestamps are published once; its watermark is the newest
  ``changedTimestamp`` seen *before* the scan began, so rows changed during the
  scan are read again. The scan saves its progress (last key) after every
  page and resumes there after a restart.
- Orders: a changed order line re-publishes its order; the version is the
  latest ``changedTimestamp`` of the head and its lines, in UTC.
- Dedupe: the watermark remembers ``{key: version}`` of every record that the
  next ``_gte`` read returns again (those at the watermark time, or inside
  ``lookback_seconds``); such a record is published again only if its version
  changed.
- The watermark (``connectors.common.poller.Watermark``, key
  ``businessnxt.<entity>``; its marks per table) is saved only after the broker
  acknowledged every event it covers (``Poller.commit``). Invalid rows are
  dead-lettered (stage ``poll``) and skipped.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from connectors.businessnxt.client import MAX_PAGE, BusinessnxtClient, table_fields
from connectors.common.deadletters import DeadLetterSink
from connectors.businessnxt.records import InvalidRow, record_version, to_event, validate_row
from connectors.businessnxt.schema import TABLES
from connectors.businessnxt.timezones import format_local, normalize_local, parse_local
from connectors.common.poller import Poller, Watermark
from connectors.common.watermarks import WatermarkStore
from schemas.change import ChangeEvent
from schemas.deadletter import DeadLetter

log = logging.getLogger(__name__)

TS = "changedTimestamp"
FLOOR = "1900-01-01T00:00:00.0000000"
SOURCE_TABLES = {"order": ("order", "orderLine"), "product": ("product",)}


# ---------------------------------------------------------------- pure decisions
def _ts_key(value: str) -> tuple:
    return parse_local(value)


def max_local(values: list[str | None], default: str | None = None) -> str | None:
    vals = [v for v in values if v]
    if default:
        vals.append(default)
    return max(vals, key=_ts_key) if vals else None


def lower_bound(mark: str, lookback_seconds: float) -> str:
    """The ``_gte`` bound of the next read: the watermark minus the look-back."""
    if not lookback_seconds:
        return normalize_local(mark)
    dt, tick = parse_local(mark)
    return format_local(dt - timedelta(seconds=lookback_seconds), tick)


def keyset_after(row: dict[str, Any], key_fields: tuple[str, ...]) -> dict:
    """Filter for rows strictly after ``row`` in (changedTimestamp, key...) order."""
    ts = row[TS]
    alternatives: list[dict] = [{TS: {"_gt": ts}}]
    eqs: list[dict] = [{TS: {"_eq": ts}}]
    for k in key_fields:
        alternatives.append({"_and": eqs + [{k: {"_gt": row[k]}}]})
        eqs = eqs + [{k: {"_eq": row[k]}}]
    return {"_or": alternatives}


def requalifies(entity: str, row: dict[str, Any], marks: dict[str, str], lookback: float) -> bool:
    """Will the next incremental read return this record again?"""
    def hit(ts: str | None, table: str) -> bool:
        return bool(ts) and _ts_key(ts) >= _ts_key(lower_bound(marks[table], lookback))

    if hit(row.get(TS), entity):
        return True
    if entity == "order":
        return any(hit(ln.get(TS), "orderLine") for ln in row.get("orderLines") or [])
    return False


def should_publish(key: str, version: str | None, seen: dict[str, str | None]) -> bool:
    """Dedupe: a record already published at this exact version is not published again."""
    return key not in seen or seen[key] != version


# ---------------------------------------------------------------- the poller
class BusinessnxtPoller(Poller):
    system = "businessnxt"

    def __init__(self, client: BusinessnxtClient, publisher: Any, watermarks: WatermarkStore, entity: str, *,
                 timezone: str = "Europe/Oslo", page_size: int = 500, dead_letters: DeadLetterSink | None = None,
                 topic: str | None = None, lookback_seconds: float = 0.0) -> None:
        if entity not in SOURCE_TABLES:
            raise ValueError(f"unknown Businessnxt entity {entity!r}")
        super().__init__(entity, publisher, watermarks, dead_letters=dead_letters, topic=topic)
        self.client = client
        self.tz = timezone
        self.page_size = max(1, min(page_size, MAX_PAGE))  # a short page means "last page"
        self.lookback = lookback_seconds

    # ---- reads ---------------------------------------------------------------
    async def _newest(self, table: str) -> str | None:
        rows = await self.client.read(table, filter={TS: {"_gte": FLOOR}}, order_by=[{TS: "DESC"}], first=1,
                                      fields=TS)
        return rows[0][TS] if rows else None

    def _changed_page(self, table: str, lower: str, fields: str | None, after: dict | None = None
                      ) -> tuple[str, dict]:
        """One page of rows of ``table`` changed since ``lower``, in (time, key) order after ``after``."""
        t = TABLES[table]
        base = {TS: {"_gte": lower}}
        flt = base if after is None else {"_and": [base, keyset_after(after, t.key)]}
        order = [{TS: "ASC"}] + [{k: "ASC"} for k in t.key]
        return table, {"filter": flt, "order_by": order, "first": self.page_size, "fields": fields}

    async def _scan_changed(self, table: str, lower: str, fields: str | None,
                            first_page: list[dict] | None = None) -> list[dict]:
        """Every row changed since ``lower`` (``first_page``: already read)."""
        out: list[dict] = []
        page = first_page
        while True:
            if page is None:
                _t, kw = self._changed_page(table, lower, fields, out[-1] if out else None)
                page = await self.client.read(table, **kw)
            out += page
            if len(page) < self.page_size:
                return out
            page = None

    async def _incremental(self, wm: Watermark) -> tuple[list[dict], dict[str, str]]:
        old = wm.marks
        marks = dict(old)
        lower = lower_bound(old[self.entity], self.lookback)
        if self.entity == "order":
            # the first pages of orders and of order lines in one request (most polls need no more)
            line_lower, line_fields = lower_bound(old["orderLine"], self.lookback), "orderNo lineNo " + TS
            heads, line_page = await self.client.read_many([
                self._changed_page("order", lower, None), self._changed_page("orderLine", line_lower, line_fields)])
            rows: list[dict] = await self._scan_changed("order", lower, None, heads)
        else:
            rows = await self._scan_changed(self.entity, lower, None)
        marks[self.entity] = max_local([r.get(TS) for r in rows if _valid_ts(r.get(TS))], old[self.entity])
        if self.entity == "order":
            lines = await self._scan_changed("orderLine", line_lower, line_fields, line_page)
            marks["orderLine"] = max_local([ln.get(TS) for ln in lines if _valid_ts(ln.get(TS))], old["orderLine"])
            have = {r.get("orderNo") for r in rows}
            missing = [ln["orderNo"] for ln in lines if ln.get("orderNo") not in have]
            if missing:
                rows += list((await self.client.read_by_keys("order", missing, fields=table_fields("order"))).values())
        return rows, marks

    # ---- one poll -------------------------------------------------------------
    def _decide(self, rows: list[Any], marks: dict[str, str], old_seen: dict[str, str | None]
                ) -> tuple[list[ChangeEvent], list[DeadLetter], dict[str, str | None]]:
        """Rows -> events to publish (deduped against ``old_seen``), dead letters,
        and the ``{key: version}`` the next read will return again."""
        records: dict[str, dict] = {}
        letters: list[DeadLetter] = []
        for row in rows:
            try:
                key = validate_row(self.entity, row)
            except InvalidRow as exc:
                rid = row.get(TABLES[self.entity].key[0]) if isinstance(row, dict) else None
                letters.append(DeadLetter(stage="poll", system="businessnxt", entity=self.entity,
                                          record_id=None if rid is None else str(rid), reason=str(exc),
                                          error_type="validation_error", payload=row))
                continue
            records[key] = row
        events: list[ChangeEvent] = []
        seen: dict[str, str | None] = {}
        for key, row in records.items():
            version = record_version(row, self.tz)
            if requalifies(self.entity, row, marks, self.lookback):
                seen[key] = version
            if should_publish(key, version, old_seen):
                events.append(to_event(self.entity, row, self.tz, origin="poll"))
        events.sort(key=lambda e: (e.version or "", e.id))
        return events, letters, seen

    async def _full_read(self, wm: Watermark) -> int:
        """Every row by key (legacy rows with null timestamps included), saving
        progress after each page; resumes an interrupted scan."""
        key = TABLES[self.entity].key[0]
        if wm.scan is None:
            marks = {t: (await self._newest(t)) or FLOOR for t in SOURCE_TABLES[self.entity]}
            seen: dict[str, str | None] = {}
            after = None
        else:  # an interrupted scan goes on where it was
            marks, seen, after = dict(wm.marks), dict(wm.seen), wm.scan["after"]
        total = 0
        while True:
            flt = {key: {"_gt": after}} if after is not None else None
            page = await self.client.read(self.entity, filter=flt, order_by=[{key: "ASC"}], first=self.page_size)
            events, letters, page_seen = self._decide(page, marks, {})
            seen.update(page_seen)
            done = len(page) < self.page_size
            after = page[-1].get(key) if page else after
            await self.commit(events, letters, Watermark(marks, dict(seen), None if done else {"after": after}))
            total += len(events)
            if done:
                log.info("businessnxt %s full read: %d events", self.entity, total)
                return total

    async def poll_once(self) -> int:
        """Read what changed since the watermark, publish it, save the watermark. Returns events published."""
        wm = await self.watermark()
        if not wm.marks or wm.scan is not None:  # never read, or a first read not done
            return await self._full_read(wm)
        rows, marks = await self._incremental(wm)
        events, letters, seen = self._decide(rows, marks, wm.seen)
        await self.commit(events, letters, Watermark(marks, seen))
        if events:
            log.info("businessnxt %s poll: %d events (newest version %s)", self.entity, len(events),
                     events[-1].version)
        return len(events)


def _valid_ts(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parse_local(value)
        return True
    except ValueError:
        return False
