"""Pure rules for turning Businessnxt rows into change events (shared by the
poller and the webhook receiver): row validation, the record key, the record
version (orders: the latest of the head and its lines), and the event itself.
"""
from __future__ import annotations

from typing import Any

from connectors.businessnxt.timezones import local_to_utc_version, parse_local, parse_utc
from schemas.change import ChangeEvent

KEY_FIELD = {"order": "orderNo", "product": "productNo"}
ENTITIES = tuple(KEY_FIELD)


class InvalidRow(ValueError):
    """A row that cannot become a change event (dead-lettered)."""


def record_key(entity: str, row: dict[str, Any]) -> str:
    key = row.get(KEY_FIELD[entity]) if isinstance(row, dict) else None
    if entity == "order":
        if not isinstance(key, int) or isinstance(key, bool):
            raise InvalidRow(f"order row without an integer orderNo: {key!r}")
    elif not isinstance(key, str) or not key:
        raise InvalidRow(f"product row without a productNo: {key!r}")
    return str(key)


def _check_ts(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRow(f"{what} is not a string: {value!r}")
    try:
        parse_local(value)
    except ValueError as exc:
        raise InvalidRow(f"{what}: {exc}") from None
    return value


def validate_row(entity: str, row: Any) -> str:
    """Raise ``InvalidRow`` unless the row can be published; returns its key."""
    if not isinstance(row, dict):
        raise InvalidRow(f"row is not an object: {row!r}")
    key = record_key(entity, row)
    _check_ts(row.get("changedTimestamp"), "changedTimestamp")
    if entity == "order":
        lines = row.get("orderLines")
        if lines is not None and not isinstance(lines, list):
            raise InvalidRow("orderLines is not a list")
        for line in lines or []:
            if not isinstance(line, dict) or not isinstance(line.get("lineNo"), int):
                raise InvalidRow(f"order {key}: line without an integer lineNo")
            _check_ts(line.get("changedTimestamp"), f"line {line.get('lineNo')} changedTimestamp")
    return key


def _local_sort_key(value: str) -> tuple:
    dt, tick = parse_local(value)
    return (dt, tick)


def latest_local(row: dict[str, Any]) -> str | None:
    """The latest server-local ``changedTimestamp`` of a record (head and lines)."""
    stamps = [row.get("changedTimestamp")]
    stamps += [ln.get("changedTimestamp") for ln in row.get("orderLines") or []]
    stamps = [s for s in stamps if s]
    return max(stamps, key=_local_sort_key) if stamps else None


def record_version(row: dict[str, Any], tz: str) -> str | None:
    """UTC version string (``...fffffffZ``) of a record, ``None`` for legacy rows."""
    return local_to_utc_version(latest_local(row), tz)


def to_event(entity: str, row: dict[str, Any], tz: str, *, origin: str = "poll") -> ChangeEvent:
    key = validate_row(entity, row)
    version = record_version(row, tz)
    return ChangeEvent(system="businessnxt", entity=entity, id=key, op="upsert", version=version,
                       modified_at=parse_utc(version) if version else None, origin=origin, data=row)


def tombstone(entity: str, key: Any, utc_version: str | None, *, origin: str = "webhook") -> ChangeEvent:
    return ChangeEvent(system="businessnxt", entity=entity, id=str(key), op="delete", version=utc_version,
                       modified_at=parse_utc(utc_version) if utc_version else None, origin=origin, data=None)
