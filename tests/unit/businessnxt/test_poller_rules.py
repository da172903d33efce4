"""Pure poller decisions: dedupe, keyset paging, re-read prediction, versions."""
from __future__ import annotations

import pytest

from connectors.businessnxt.filters import compile_filter, sort_rows
from connectors.businessnxt.poller import keyset_after, lower_bound, max_local, requalifies, should_publish
from connectors.businessnxt.records import InvalidRow, record_version, to_event, tombstone, validate_row
from connectors.businessnxt.schema import ORDER_LINE


def test_dedupe_decision():
    seen = {"1": "2026-11-25T13:00:00.0000000Z", "2": None}
    assert not should_publish("1", "2026-11-25T13:00:00.0000000Z", seen)
    assert should_publish("1", "2026-11-25T13:00:00.0000001Z", seen)
    assert not should_publish("2", None, seen)
    assert should_publish("3", "2026-11-25T13:00:00.0000000Z", seen)


def test_keyset_after_selects_exactly_the_rows_after():
    ts = ["2026-01-01T00:00:00.0000000", "2026-01-01T00:00:00.0000001"]
    rows = [{"orderNo": o, "lineNo": ln, "changedTimestamp": t} for t in ts for o in (1, 2) for ln in (1, 2)]
    ordered = sort_rows(rows, [{"changedTimestamp": "ASC"}], ("orderNo", "lineNo"))
    for i, last in enumerate(ordered):
        pred = compile_filter(keyset_after(last, ("orderNo", "lineNo")), ORDER_LINE.fields)
        assert [r for r in ordered if pred(r)] == ordered[i + 1:]


def test_requalifies_and_bounds():
    marks = {"order": "2026-01-01T10:00:00.0000000", "orderLine": "2026-01-01T11:00:00.0000000"}
    head_at_mark = {"changedTimestamp": "2026-01-01T10:00:00.0000000", "orderLines": []}
    old = {"changedTimestamp": "2026-01-01T09:00:00.0000000",
           "orderLines": [{"changedTimestamp": "2026-01-01T09:00:00.0000000"}]}
    line_at_mark = {"changedTimestamp": None, "orderLines": [{"changedTimestamp": "2026-01-01T11:00:00.0000000"}]}
    assert requalifies("order", head_at_mark, marks, 0)
    assert not requalifies("order", old, marks, 0)
    assert requalifies("order", line_at_mark, marks, 0)
    assert requalifies("order", old, marks, 3600)  # inside the look-back window
    assert lower_bound("2026-01-01T10:00:00.5000000", 1.0) == "2026-01-01T09:59:59.5000000"
    assert max_local(["2026-01-01T10:00:00.0000001", None, "2026-01-01T10:00:00.0000000"]) == \
        "2026-01-01T10:00:00.0000001"


def test_order_version_is_latest_of_head_and_lines():
    row = {"orderNo": 7, "changedTimestamp": "2026-11-25T10:00:00.0000000",
           "orderLines": [{"lineNo": 1, "changedTimestamp": "2026-11-25T11:00:00.0000000"},
                          {"lineNo": 2, "changedTimestamp": None}]}
    assert record_version(row, "Europe/Oslo") == "2026-11-25T10:00:00.0000000Z"
    ev = to_event("order", row, "Europe/Oslo")
    assert ev.id == "7" and ev.key == b"7" and ev.op == "upsert" and ev.data == row
    assert ev.modified_at.isoformat() == "2026-11-25T10:00:00+00:00"
    legacy = to_event("product", {"productNo": "A", "changedTimestamp": None}, "Europe/Oslo")
    assert legacy.version is None and legacy.modified_at is None
    t = tombstone("order", 7, "2026-11-25T10:00:00.0000000Z")
    assert t.op == "delete" and t.data is None and t.origin == "webhook"


@pytest.mark.parametrize("entity,row", [
    ("order", {"orderNo": None}),
    ("order", {"orderNo": "7"}),
    ("product", {"productNo": ""}),
    ("product", {"productNo": "A", "changedTimestamp": "garbage"}),
    ("order", {"orderNo": 1, "orderLines": [{"lineNo": None}]}),
    ("order", "not a row"),
])
def test_invalid_rows(entity, row):
    with pytest.raises(InvalidRow):
        validate_row(entity, row)
