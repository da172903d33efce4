"""Unit tests of the pure parts of the Customcrm connector (no I/O)."""
from __future__ import annotations

import pytest

from connectors.common.errors import (
    AuthError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TimeoutError_,
    ValidationError,
)
from connectors.customcrm import entity_of, resource_of
from connectors.customcrm.client import (
    IdempotencyKeyReusedError,
    RecordDeletedError,
    VersionConflictError,
    error_from_response,
    retry_decision,
)
from connectors.customcrm.models import OrderData, ProductData, UserData, validate_record
from connectors.common.poller import Watermark
from connectors.customcrm.poller import canonical_time, change_event, plan_page
from connectors.customcrm.sandbox import (
    RateLimiter,
    Store,
    decode_cursor,
    encode_cursor,
    endpoint_label,
    parse_if_match,
    parse_ts,
)
from connectors.customcrm.writer import operation_of, result_of
from schemas.command import WriteCommand


def rec(rid: str, modified_at: str, version: int = 1, **kw) -> dict:
    return {"Id": rid, "Sku": f"S-{rid}", "Name": "n", "Description": None, "Price": "1", "StockQuantity": "0",
            "Url": None, "CreatedAt": "2026-01-01T00:00:00.000000Z", "ModifiedAt": modified_at,
            "Version": version, "Deleted": False, **kw}


T1, T2, T3 = ("2026-11-25T10:00:00.000001Z", "2026-11-25T10:00:00.000002Z", "2026-11-25T10:00:00.000003Z")


# ---------------------------------------------------------------- poller: what to publish


def test_plan_publishes_everything_from_an_empty_watermark():
    page = [rec("a", T1), rec("b", T2), rec("c", T2)]
    plan = plan_page("products", page, Watermark())
    assert plan.publish == page and plan.invalid == []
    assert plan.watermark == Watermark({"products": T2}, {"b": "1", "c": "1"})


def test_plan_skips_versions_at_the_watermark_but_not_new_ones_at_the_same_time():
    wm = Watermark({"products": T2}, {"b": "1"})
    page = [rec("b", T2), rec("c", T2), rec("d", T3)]  # modified_since is inclusive: b comes again
    plan = plan_page("products", page, wm)
    assert [r["Id"] for r in plan.publish] == ["c", "d"] and plan.skipped == 1
    assert plan.watermark == Watermark({"products": T3}, {"d": "1"})


def test_plan_republishes_a_new_version_with_the_same_time():
    plan = plan_page("products", [rec("b", T2, version=2)], Watermark({"products": T2}, {"b": "1"}))
    assert [r["Version"] for r in plan.publish] == [2]
    assert plan.watermark.seen == {"b": "2"}


def test_plan_ignores_records_older_than_the_watermark():
    plan = plan_page("products", [rec("a", T1)], Watermark({"products": T2}, {"b": "1"}))
    assert plan.publish == [] and plan.watermark == Watermark({"products": T2}, {"b": "1"})


def test_plan_compares_times_not_spellings():
    same_instant = "2026-11-25T11:00:00.000002+01:00"
    plan = plan_page("products", [rec("b", same_instant)], Watermark({"products": T2}, {"b": "1"}))
    assert plan.publish == [] and plan.skipped == 1


def test_plan_dead_letters_invalid_records_and_moves_on():
    page = [rec("a", T1), rec("bad", T2, Price="cheap"), {"garbage": True}, rec("c", T3)]
    plan = plan_page("products", page, Watermark())
    assert [r["Id"] for r in plan.publish] == ["a", "c"]
    assert [i.record_id for i in plan.invalid] == ["bad", None]
    assert "bad" in plan.invalid[0].reason and "Price" in plan.invalid[0].reason
    assert plan.watermark.marks == {"products": T3}
    # the invalid record is covered by the watermark: not reported again
    again = plan_page("products", [rec("bad", T2, Price="cheap")], Watermark({"products": T2}, {"bad": "1"}))
    assert again.invalid == [] and again.skipped == 1


def test_watermark_round_trips_through_json():
    wm = Watermark({"products": T2}, {"a": "3"})
    assert Watermark.from_json(wm.to_json()) == wm
    assert Watermark.from_json(None) == Watermark()


def test_change_event_of_a_deleted_record():
    ev = change_event("product", rec("a", T1, version=4, Deleted=True))
    assert (ev.id, ev.op, ev.version, ev.topic) == ("a", "delete", "4", "customcrm.product.changes")
    assert ev.modified_at.isoformat() == "2026-11-25T10:00:00.000001+00:00"


def test_canonical_time():
    assert canonical_time("2026-11-25T10:00:00Z") == "2026-11-25T10:00:00.000000Z"
    assert canonical_time("2026-11-25T10:00:00") is None  # no time zone
    assert canonical_time(17) is None


# ---------------------------------------------------------------- sandbox helpers


def test_cursor_round_trip_and_rejection():
    key = (T1, "ord_000001")
    cursor = encode_cursor("orders", key)
    assert "=" not in cursor and decode_cursor("orders", cursor) == key
    with pytest.raises(ValueError):
        decode_cursor("products", cursor)  # made for another resource
    for bad in ("", "!!!", "e30", cursor[:-3]):
        with pytest.raises(ValueError):
            decode_cursor("orders", bad)


def test_parse_ts_and_if_match():
    assert parse_ts("2026-11-25T12:00:00+02:00") == "2026-11-25T10:00:00.000000Z"
    for bad in ("2026-11-25", "2026-11-25T10:00:00", "nonsense-value-here-x"):
        with pytest.raises(ValueError):
            parse_ts(bad)
    assert parse_if_match(None) is None
    assert parse_if_match("3") == parse_if_match('"3"') == parse_if_match('W/"3"') == 3
    with pytest.raises(ValueError):
        parse_if_match("three")


def test_rate_limiter_is_a_sliding_window_per_token():
    rl = RateLimiter(2, 10.0)
    assert rl.check("t", 0.0) is None and rl.check("t", 1.0) is None
    assert rl.check("t", 2.0) == pytest.approx(8.0)
    assert rl.check("other", 2.0) is None
    assert rl.check("t", 10.5) is None  # the first hit left the window


def test_endpoint_labels():
    assert endpoint_label("GET", "/api/v1/orders") == "GET /api/v1/orders"
    assert endpoint_label("GET", "/api/v1/orders/ord_1") == "GET /api/v1/orders/{id}"
    assert endpoint_label("POST", "/api/v1/orders/bulk") == "POST /api/v1/orders/bulk"


def test_store_feed_index_stays_sorted_and_complete():
    store = Store()
    ids = [store.create("users", {"FullName": f"U{i}", "Email": f"u{i}@x.io"})["Id"] for i in range(20)]
    for rid in ids[::3]:
        store.update("users", rid, {"Title": "t"}, None)
    store.delete("users", ids[1], None)
    coll = store.collections["users"]
    assert coll.index == sorted((r["ModifiedAt"], r["Id"]) for r in coll.records.values())
    items, nxt = store.changes("users", None, None, 1000)
    assert len(items) == 20 and nxt is None
    page, nxt = store.changes("users", None, None, 5)
    assert len(page) == 5 and nxt == (page[-1]["ModifiedAt"], page[-1]["Id"])
    rest, _ = store.changes("users", None, nxt, 1000)
    assert page + rest == items


def test_models_match_the_contract():
    assert ProductData.model_validate({"Sku": "a", "Name": "n"}).Price == "0"
    assert OrderData.model_validate({"Name": "o", "CustomerNo": 1, "OrderDate": "2026-01-31"}).Status == "open"
    assert UserData.model_validate({"FullName": "f", "Email": "a@b.co"}).Active is True
    assert validate_record("users", {"FullName": "f", "Email": "a@b.co"}) is not None  # no Id etc.
    assert validate_record("products", rec("a", T1, NewField="tolerated")) is None
    assert "Price" in validate_record("products", rec("a", T1, Price=1))


# ---------------------------------------------------------------- client: error classification


@pytest.mark.parametrize("status,body,cls,kind", [
    (401, b'{"error": {"code": "unauthorized", "message": "m"}}', AuthError, "permanent"),
    (404, b'{"error": {"code": "not_found", "message": "m"}}', NotFoundError, "not_found"),
    (409, b'{"error": {"code": "deleted", "message": "m"}}', RecordDeletedError, "not_found"),
    (409, b'{"error": {"code": "idempotency_key_reused", "message": "m"}}', IdempotencyKeyReusedError, "permanent"),
    (412, b'{"error": {"code": "version_conflict", "message": "m", "current_version": 7}}',
     VersionConflictError, "conflict"),
    (422, b'{"error": {"code": "validation_error", "message": "m", "fields": {"Sku": "required"}}}',
     ValidationError, "permanent"),
    (413, b'{"error": {"code": "payload_too_large", "message": "m"}}', ValidationError, "permanent"),
    (400, b'{"error": {"code": "bad_request", "message": "m"}}', ValidationError, "permanent"),
    (429, b'{"error": {"code": "rate_limited", "message": "m"}}', RateLimitedError, "retryable"),
    (500, b"<html>oops</html>", ServerError, "retryable"),
    (503, b"", ServerError, "retryable"),
])
def test_error_from_response(status, body, cls, kind):
    exc = error_from_response("PATCH /api/v1/orders/ord_1", status, body, {"retry-after": "3"})
    assert type(exc) is cls and exc.status_kind == kind and exc.status == status
    assert "PATCH /api/v1/orders/ord_1" in str(exc)


def test_error_details():
    e = error_from_response("x", 412, b'{"error": {"code": "version_conflict", "message": "m", "current_version": 7}}', {})
    assert e.current_version == 7 and "version 7" in str(e)
    e = error_from_response("x", 422, b'{"error": {"code": "validation_error", "message": "m", '
                                      b'"fields": {"Sku": "required"}}}', {})
    assert e.details == {"Sku": "required"} and "Sku: required" in str(e)
    e = error_from_response("x", 429, b"", {"retry-after": "3"})
    assert e.retry_after == 3.0


def test_retry_decision():
    assert retry_decision(ServerError("x")) is True
    assert retry_decision(TimeoutError_("x")) is True
    assert retry_decision(MalformedResponseError("x")) is True
    assert retry_decision(ValidationError("x")) is False
    assert retry_decision(VersionConflictError("x")) is False
    assert retry_decision(ValueError("x")) is False
    wait = retry_decision(RateLimitedError("x", retry_after=2.0))
    assert isinstance(wait, float) and 2.0 <= wait <= 2.25
    assert retry_decision(RateLimitedError("x")) is True


def test_resource_names():
    assert [resource_of(e) for e in ("order", "product", "user")] == ["orders", "products", "users"]
    assert entity_of("users") == "user"
    with pytest.raises(ValueError):
        resource_of("invoice")


# ---------------------------------------------------------------- writer: operations and results


def command(op: str, **kw) -> WriteCommand:
    base = dict(command_id="c1", flow="order-order", link_key="lk", system="customcrm", entity="order", op=op)
    return WriteCommand(**{**base, **kw})


def test_operation_of():
    assert operation_of(command("create", idempotency_key="k", data={"Name": "x"})) == {
        "op": "create", "idempotency_key": "k", "data": {"Name": "x"}}
    assert operation_of(command("create"))["idempotency_key"] == "c1"  # deterministic fallback
    assert operation_of(command("update", target_id="ord_1", expected_version="3", data={"Name": "y"})) == {
        "op": "update", "id": "ord_1", "if_version": 3, "data": {"Name": "y"}}
    assert operation_of(command("delete", target_id="ord_1")) == {"op": "delete", "id": "ord_1", "if_version": None}
    for bad in (command("update"), command("create", system="businessnxt"), command("create", entity="invoice")):
        with pytest.raises(ValueError):
            operation_of(bad)


@pytest.mark.parametrize("outcome,status", [
    ({"status": 201, "record": {"Id": "ord_9", "Version": 1}, "error": None}, "ok"),
    ({"status": 204, "record": None, "error": None}, "ok"),
    ({"status": 404, "record": None, "error": {"code": "not_found", "message": "m"}}, "not_found"),
    ({"status": 409, "record": None, "error": {"code": "deleted", "message": "m"}}, "not_found"),
    ({"status": 409, "record": None, "error": {"code": "idempotency_key_reused", "message": "m"}}, "permanent"),
    ({"status": 412, "record": None, "error": {"code": "version_conflict", "message": "m", "current_version": 4}},
     "conflict"),
    ({"status": 422, "record": None, "error": {"code": "validation_error", "message": "m", "fields": {}}},
     "permanent"),
    ({"status": 503, "record": None, "error": None}, "retryable"),
    ({"record": None}, "retryable"),
])
def test_result_of(outcome, status):
    res = result_of(command("update", target_id="ord_1"), outcome)
    assert res.status == status
    if status == "ok":
        assert res.error is None and res.target_id in ("ord_9", "ord_1")
    else:
        assert res.error and "ord_1" in res.error


def test_result_of_a_create_names_the_new_record():
    res = result_of(command("create"), {"status": 201, "record": {"Id": "ord_9", "Version": 1}, "error": None})
    assert (res.target_id, res.version, res.record) == ("ord_9", "1", {"Id": "ord_9", "Version": 1})


def test_already_applied():
    from connectors.customcrm.writer import already_applied

    rec_ = {"Id": "a", "Name": "x", "Price": "1", "Deleted": False}
    assert already_applied(rec_, {"Name": "x"}) and already_applied(rec_, {})
    assert not already_applied(rec_, {"Name": "y"})
    assert not already_applied({**rec_, "Deleted": True}, {"Name": "x"})
