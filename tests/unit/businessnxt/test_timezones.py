"""Server-local timestamps <-> UTC."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connectors.businessnxt import timezones as T


def test_parse_and_format_keep_seven_digits():
    dt, tick = T.parse_local("2026-11-25T14:03:11.1250003")
    assert dt == datetime(2026, 11, 25, 14, 3, 11, 125000) and tick == 3
    assert T.format_local(dt, tick) == "2026-11-25T14:03:11.1250003"
    assert T.normalize_local("2026-11-25T14:03:11") == "2026-11-25T14:03:11.0000000"
    assert T.normalize_local("2026-11-25T14:03:11.5") == "2026-11-25T14:03:11.5000000"
    for bad in ("2026-11-25T14:03:11Z", "2026-11-25T14:03:11+01:00", "yesterday", "2026-13-01T00:00:00"):
        with pytest.raises(ValueError):
            T.parse_local(bad)


def test_winter_and_summer_offsets():
    assert T.local_to_utc("2026-11-25T14:00:00") == datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)
    assert T.local_to_utc("2026-07-01T14:00:00") == datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
    assert T.local_to_utc("2026-07-01T14:00:00", "UTC") == datetime(2026, 7, 1, 14, 0, tzinfo=timezone.utc)
    assert T.local_to_utc_version("2026-11-25T14:03:11.1250003") == "2026-11-25T13:03:11.1250003Z"
    assert T.local_to_utc_version(None) is None


def test_dst_ambiguity_and_gap_are_deterministic():
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; the first (summer time) wins
    assert T.local_to_utc("2026-10-25T02:30:00") == datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)
    # 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist; read with the offset before the gap
    assert T.local_to_utc("2026-03-29T02:30:00") == datetime(2026, 3, 29, 1, 30, tzinfo=timezone.utc)


def test_round_trip_and_utc_versions():
    utc = datetime(2026, 11, 25, 13, 3, 11, 125000, tzinfo=timezone.utc)
    assert T.local_to_utc(T.utc_to_local(utc)) == utc
    assert T.utc_version("2026-11-25T13:03:11Z") == "2026-11-25T13:03:11.0000000Z"
    assert T.utc_version("2026-11-25T14:03:11.1234567+01:00") == "2026-11-25T13:03:11.1234567Z"
    assert T.parse_utc("2026-11-25T13:03:11.1234567Z") == datetime(2026, 11, 25, 13, 3, 11, 123456,
                                                                    tzinfo=timezone.utc)
    # versions sort like time
    a = T.local_to_utc_version("2026-11-25T14:03:11.1250000")
    b = T.local_to_utc_version("2026-11-25T14:03:11.1250001")
    assert a < b
