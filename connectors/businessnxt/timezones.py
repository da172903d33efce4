"""Business NXT server-local timestamps <-> UTC (pure functions).

Business NXT returns ``createdTimestamp`` / ``changedTimestamp`` as server
local wall-clock time without an offset, with up to 7 fraction digits
(100 ns ticks), e.g. ``2026-11-25T14:03:11.1250000``. We convert them with a
configured IANA zone (default Europe/Oslo).

DST rules (deterministic): a local time that occurs twice (autumn fall-back)
is read as its *first* occurrence (``fold=0``, the summer-time offset); a local
time that does not exist (spring gap) is read with the offset in force before
the gap (``fold=0``), i.e. it maps to the instant one hour later on the UTC
axis than a naive reading, exactly as :mod:`zoneinfo` does for ``fold=0``.

Versions are UTC strings ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` (7 digits, so no
tick is lost and strings sort in time order).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

DEFAULT_TIMEZONE = "Europe/Oslo"

_LOCAL_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,7}))?)?$"
)


@lru_cache(maxsize=32)
def zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or DEFAULT_TIMEZONE)


@lru_cache(maxsize=8192)  # a row's timestamp is parsed several times on its way (check, sort, version)
def parse_local(value: str) -> tuple[datetime, int]:
    """``'2026-11-25T14:03:11.1250000'`` -> (naive datetime with microseconds, extra 100ns tick 0..9).

    Raises ``ValueError`` on anything that is not a local ISO timestamp (an
    offset or ``Z`` is rejected: the server never sends one).
    """
    m = _LOCAL_RE.match(value.strip())
    if not m:
        raise ValueError(f"not a server-local timestamp: {value!r}")
    y, mo, d, h, mi, s, frac = m.groups()
    frac = (frac or "").ljust(7, "0")
    dt = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0), int(frac[:6]))
    return dt, int(frac[6])


def format_local(dt: datetime, tick: int = 0) -> str:
    """Naive local datetime -> the server's text form with 7 fraction digits."""
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}{tick}"


def normalize_local(value: str) -> str:
    """Canonical 7-digit form of a local timestamp (comparable as strings)."""
    return format_local(*parse_local(value))


def local_to_utc(value: str | datetime, tz: str | None = DEFAULT_TIMEZONE) -> datetime:
    """Server-local timestamp -> aware UTC datetime (fold=0 on DST ambiguity)."""
    dt = parse_local(value)[0] if isinstance(value, str) else value
    if dt.tzinfo is not None:
        return dt.astimezone(timezone.utc)
    return dt.replace(tzinfo=zone(tz), fold=0).astimezone(timezone.utc)


def utc_to_local(value: datetime, tz: str | None = DEFAULT_TIMEZONE) -> datetime:
    """Aware datetime -> naive server-local wall-clock time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(zone(tz)).replace(tzinfo=None)


def format_utc(dt: datetime, tick: int = 0) -> str:
    """Aware datetime -> ``YYYY-MM-DDTHH:MM:SS.fffffffZ``."""
    dt = dt.astimezone(timezone.utc)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{dt.microsecond:06d}{tick}Z"


@lru_cache(maxsize=8192)
def local_to_utc_version(value: str | None, tz: str | None = DEFAULT_TIMEZONE) -> str | None:
    """A ``changedTimestamp`` as the UTC version string (``None`` stays ``None``)."""
    if value is None:
        return None
    dt, tick = parse_local(value)
    return format_utc(local_to_utc(dt, tz), tick)


def parse_utc(value: str) -> datetime:
    """UTC ISO string (``Z`` or offset, up to 7 fraction digits) -> aware datetime."""
    v = value.strip()
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    m = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(?:[.,](\d+))?(.*)$", v)
    if m and m.group(2) and len(m.group(2)) > 6:
        v = f"{m.group(1)}.{m.group(2)[:6]}{m.group(3)}"
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def version_to_datetime(version: str | None) -> datetime | None:
    return parse_utc(version) if version else None


def utc_version(value: str | datetime) -> str:
    """Normalise any UTC timestamp (string or datetime) to the version form."""
    if isinstance(value, datetime):
        return format_utc(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    v = value.strip()
    m = re.match(r"^.*T\d{2}:\d{2}:\d{2}[.,](\d{7})", v)
    tick = int(m.group(1)[6]) if m else 0
    return format_utc(parse_utc(v), tick)
