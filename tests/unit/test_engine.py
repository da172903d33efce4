"""The link decisions (streams.engine), driven directly with plain data.

Each test names the invariant it checks (docs/architecture.md, section 2).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from schemas.change import ChangeEvent
from schemas.command import WriteResult
from streams import engine
from streams.engine import Policy
from tests.unit.edge import data, handle_change, handle_result, handle_tick
from streams.mapping import DictRefResolver, load_mapping

MAPPING = load_mapping()
ORDER = MAPPING.flow("order-order")
PRODUCT = MAPPING.flow("product-product")
USER = MAPPING.flow("user-order")
T0 = datetime(2026, 11, 25, 10, 0, 0, tzinfo=timezone.utc)
POLICY = Policy(park_timeout=60, settings={"internal_customer_no": 10000})
REFS = DictRefResolver({"prd_1": "SKU-1", "prd_2": "SKU-2"})


def sent(command) -> dict:
    """What a command writes to its system (the sink encodes its canonical values)."""
    return data(command, REFS, POLICY.settings)


def crm_order(version=1, at=T0, **over):
    rec = {"Id": "ord_1", "Name": "First order", "CustomerNo": 10001, "OrderDate": "2026-11-20", "DueDate": None,
           "Discount": "0", "YourReference": "PO-1", "Status": "open", "Version": version,
           "ModifiedAt": at.isoformat(), "CreatedAt": T0.isoformat(), "Deleted": False,
           "Lines": [{"LineNo": 1, "ProductId": "prd_1", "Quantity": "2", "UnitPrice": "10.00", "Description": None}]}
    rec.update(over)
    return ChangeEvent(system="customcrm", entity="order", id="ord_1", op="upsert", version=str(version),
                       modified_at=at, data=rec)


def bnxt_order(version_at, **over):
    row = {"orderNo": 5001, "name": "First order", "customerNo": 10001, "orderDate": 20261120, "dueDate": 0,
           "totalDiscountAmountInCurrency": 0, "yourReference": "PO-1", "ourReference": None,
           "information1": "customcrm:order:ord_1",
           "orderLines": [{"orderNo": 5001, "lineNo": 1, "productNo": "SKU-1", "quantity": 2, "priceInCurrency": 10,
                           "description": None}]}
    row.update(over)
    return ChangeEvent(system="businessnxt", entity="order", id="5001", op="upsert",
                       version=version_at.isoformat(), modified_at=version_at, data=row)


def ok(cmd, *, version, record, target_id=None, matched=False):
    return WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system=cmd.system,
                       entity=cmd.entity, op=cmd.op, status="ok", target_id=target_id or cmd.target_id,
                       version=version, record=record, matched=matched)


def linked_order():
    """A linked order: created in Businessnxt and acknowledged."""
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    (create,) = out.commands
    t_ack = T0 + timedelta(seconds=1)
    record = bnxt_order(t_ack).data
    out = handle_result(out.link, ORDER, ok(create, version=t_ack.isoformat(), record=record, target_id="5001"),
                        now=1, refs=REFS, policy=POLICY)
    assert out.commands == []
    return out.link, t_ack


def test_first_sync_creates_exactly_one_target_with_origin_stamp():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    assert [c.op for c in out.commands] == ["create"]
    cmd = out.commands[0]
    assert cmd.system == "businessnxt" and cmd.entity == "order"
    assert cmd.idempotency_key == "customcrm:order:ord_1" and cmd.origin_field == "information1"
    assert sent(cmd)["information1"] == "customcrm:order:ord_1"
    assert sent(cmd)["orderDate"] == 20261120
    assert sent(cmd)["orderLines"][0]["productNo"] == "SKU-1"
    assert out.link["status"] == engine.PENDING
    # a re-delivered event, and a newer edit while the create is pending: never a second create
    again = handle_change(out.link, ORDER, crm_order(), "order-order:ord_1", now=1, refs=REFS, policy=POLICY)
    assert again.commands == []
    edit = handle_change(out.link, ORDER, crm_order(2, T0 + timedelta(seconds=5), Name="Renamed"),
                         "order-order:ord_1", now=2, refs=REFS, policy=POLICY)
    assert edit.commands == []
    # after the create's acknowledgement the held change is sent as one update
    t_ack = T0 + timedelta(seconds=6)
    after = handle_result(edit.link, ORDER, ok(cmd, version=t_ack.isoformat(), record=bnxt_order(t_ack).data,
                                                target_id="5001"), now=3, refs=REFS, policy=POLICY)
    assert [(c.op, c.target_id, sent(c)) for c in after.commands] == [("update", "5001", {"name": "Renamed"})]


def test_no_echo_our_write_read_back_makes_no_write():
    link, t_ack = linked_order()
    # the poller reads back the version we wrote
    out = handle_change(link, ORDER, bnxt_order(t_ack), "order-order:ord_1", now=5, refs=REFS, policy=POLICY)
    assert out.commands == [] and "skip:echo" in out.actions
    # an edit in Customcrm: exactly one write to Businessnxt
    edit = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=10), Name="New name"),
                         "order-order:ord_1", now=6, refs=REFS, policy=POLICY)
    assert [(c.system, sent(c)) for c in edit.commands] == [("businessnxt", {"name": "New name"})]
    # ... whose read-back (a later version, with our value) writes nothing back
    t2 = T0 + timedelta(seconds=11)
    back = handle_change(edit.link, ORDER, bnxt_order(t2, name="New name"), "order-order:ord_1", now=7,
                         refs=REFS, policy=POLICY)
    assert back.commands == []


def test_edit_in_businessnxt_reaches_customcrm():
    link, _ = linked_order()
    t = T0 + timedelta(seconds=20)
    out = handle_change(link, ORDER, bnxt_order(t, yourReference="PO-2", orderDate=20261201),
                        "order-order:ord_1", now=8, refs=REFS, policy=POLICY)
    assert [(c.system, c.target_id, sent(c)) for c in out.commands] == [
        ("customcrm", "ord_1", {"OrderDate": "2026-12-01", "YourReference": "PO-2"})]


def test_formatting_differences_never_cause_a_write():
    link, _ = linked_order()
    t = T0 + timedelta(seconds=20)
    out = handle_change(link, ORDER, bnxt_order(t, totalDiscountAmountInCurrency=0.0, yourReference="PO-1"),
                        "order-order:ord_1", now=8, refs=REFS, policy=POLICY)
    assert out.commands == []


def test_older_version_never_overwrites_newer():
    link, _ = linked_order()
    edit = handle_change(link, ORDER, crm_order(3, T0 + timedelta(seconds=30), Name="v3"), "order-order:ord_1",
                         now=9, refs=REFS, policy=POLICY)
    stale = handle_change(edit.link, ORDER, crm_order(2, T0 + timedelta(seconds=20), Name="v2"),
                          "order-order:ord_1", now=10, refs=REFS, policy=POLICY)
    assert stale.commands == [] and "skip:stale" in stale.actions
    assert stale.link["base"]["Name"][0] == "v3"


def test_conflict_on_different_properties_takes_both():
    link, _ = linked_order()
    crm = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=30), Name="from crm"),
                        "order-order:ord_1", now=9, refs=REFS, policy=POLICY)
    bn = handle_change(crm.link, ORDER, bnxt_order(T0 + timedelta(seconds=31), yourReference="from erp"),
                       "order-order:ord_1", now=10, refs=REFS, policy=POLICY)
    base = {p: v[0] for p, v in bn.link["base"].items()}
    assert base["Name"] == "from crm" and base["YourReference"] == "from erp"
    assert [(c.system, sent(c)) for c in bn.commands] == [("customcrm", {"YourReference": "from erp"})]


@pytest.mark.parametrize("erp_later", [True, False])
def test_conflict_on_the_same_property_later_modification_wins(erp_later):
    link, _ = linked_order()
    t_crm = T0 + timedelta(seconds=30)
    t_erp = t_crm + timedelta(seconds=5 if erp_later else -5)
    crm = handle_change(link, ORDER, crm_order(2, t_crm, Name="crm"), "order-order:ord_1", now=9, refs=REFS,
                        policy=POLICY)
    bn = handle_change(crm.link, ORDER, bnxt_order(t_erp, name="erp"), "order-order:ord_1", now=10, refs=REFS,
                       policy=POLICY)
    assert "merge" in bn.actions
    winner = "erp" if erp_later else "crm"
    assert bn.link["base"]["Name"][0] == winner
    # the decision says why (talkstream.decisions)
    assert crm.changes == [{"property": "Name", "side": "customcrm", "old": "First order", "new": "crm",
                            "why": "customcrm changed it"}]
    name = [c for c in bn.changes if c["property"] == "Name"]
    assert name == [{"property": "Name", "side": "businessnxt", "old": "crm", "new": winner,
                     "why": "later change won a conflict: " + ("businessnxt's is newer than customcrm's" if erp_later
                                                               else "customcrm's is newer than businessnxt's")}]
    written = [(c.system, sent(c).get("name", sent(c).get("Name"))) for c in crm.commands + bn.commands]
    if erp_later:
        # Customcrm gets the ERP value ...
        assert written == [("businessnxt", "crm"), ("customcrm", "erp")]
        # ... and when our in-flight write of the older value lands in the ERP, the ERP gets
        # the winning value back
        (inflight,) = crm.commands
        t_w = t_erp + timedelta(seconds=1)
        landed = handle_result(bn.link, ORDER, ok(inflight, version=t_w.isoformat(),
                                                  record=bnxt_order(t_w, name="crm").data),
                               now=11, refs=REFS, policy=POLICY)
        assert [(c.system, sent(c)) for c in landed.commands] == [("businessnxt", {"name": "erp"})]
    else:
        assert written == [("businessnxt", "crm")]


def test_empty_never_overwrites_non_empty_in_a_conflict():
    link, _ = linked_order()
    crm = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=30), YourReference="kept"),
                        "order-order:ord_1", now=9, refs=REFS, policy=POLICY)
    bn = handle_change(crm.link, ORDER, bnxt_order(T0 + timedelta(seconds=40), yourReference=""),
                       "order-order:ord_1", now=10, refs=REFS, policy=POLICY)
    assert bn.link["base"]["YourReference"][0] == "kept"
    assert [c["why"] for c in bn.changes if c["property"] == "YourReference"] == \
        ["empty never overwrites: businessnxt emptied it while customcrm changed it"]


def test_order_with_unlinked_product_parks_then_syncs():
    refs = DictRefResolver({})
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=refs, policy=POLICY)
    assert out.commands == [] and "park" in out.actions and out.wake_at is not None
    assert out.link["park"]["missing"] == ["prd_1"]
    still = handle_tick(out.link, ORDER, now=out.wake_at, refs=refs, policy=POLICY)
    assert still.commands == [] and still.link["park"]["attempts"] == 2
    later = handle_tick(still.link, ORDER, now=still.wake_at, refs=REFS, policy=POLICY)
    assert [c.op for c in later.commands] == ["create"] and later.link["park"] is None


def test_a_parked_order_is_ticked_when_its_products_are_linked_not_on_every_backoff_step():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=DictRefResolver({}), policy=POLICY)
    wake = engine.wake_plan(out.link, POLICY)
    assert wake.missing == ("prd_1",) and wake.other_at is None
    unlinked, linked = (lambda _p: False), (lambda _p: True)
    assert not engine.tick_useful(wake, wake.at, unlinked, POLICY)  # retrying cannot succeed yet
    assert engine.tick_useful(wake, 0.01, linked, POLICY)  # its product got linked: retry now
    # still unlinked: one retry per park_backoff_max, so the waiting-time bound keeps counting
    assert engine.tick_useful(wake, POLICY.park_heartbeat, unlinked, POLICY)


def test_a_lost_result_is_ticked_even_while_the_order_waits_for_products():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=DictRefResolver({}), policy=POLICY)
    link = out.link
    link["inflight"]["order-order:ord_1#9"] = {"side": "businessnxt", "op": "update", "props": [], "at": 0}
    wake = engine.wake_plan(link, POLICY)
    assert wake.other_at == POLICY.ack_timeout
    assert engine.tick_useful(wake, POLICY.ack_timeout, lambda _p: False, POLICY)


def test_a_linked_idle_link_needs_no_tick():
    assert engine.wake_plan(linked_order()[0], POLICY) is None


def test_parked_past_its_bound_is_dead_lettered_with_the_missing_ids():
    refs = DictRefResolver({})
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=refs, policy=POLICY)
    # a long pause (the worker was down) does not use up the bound ...
    out = handle_tick(out.link, ORDER, now=1000, refs=refs, policy=POLICY)
    assert out.deadletters == [] and "park" in out.actions
    # ... waiting while running does
    now = 1000
    while not out.deadletters:
        now = out.wake_at
        out = handle_tick(out.link, ORDER, now=now, refs=refs, policy=POLICY)
        assert now < 1000 + 2 * POLICY.park_timeout
    dead = out
    assert dead.commands == []
    (dl,) = dead.deadletters
    assert dl.error_type == "unknown_reference" and "prd_1" in dl.reason and dl.flow == "order-order"
    assert dl.link_key == "order-order:ord_1"


def test_invalid_record_is_dead_lettered_with_reason():
    bad = crm_order(Lines=[{"LineNo": 1, "ProductId": "prd_1", "Quantity": "-3", "UnitPrice": "1", "Description": None}])
    out = handle_change(None, ORDER, bad, "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    assert out.commands == []
    (dl,) = out.deadletters
    assert "Quantity" in dl.reason and dl.record_id == "ord_1" and dl.payload["id"] == "ord_1"


def test_delete_is_not_propagated_by_default_and_link_stops_syncing():
    link, _ = linked_order()
    deleted = ChangeEvent(system="customcrm", entity="order", id="ord_1", op="delete", version="9",
                          modified_at=T0 + timedelta(seconds=50), data={**crm_order().data, "Deleted": True})
    out = handle_change(link, ORDER, deleted, "order-order:ord_1", now=9, refs=REFS, policy=POLICY)
    assert out.commands == [] and out.link["status"] == engine.DELETED
    later = handle_change(out.link, ORDER, bnxt_order(T0 + timedelta(seconds=60), name="edited"),
                          "order-order:ord_1", now=10, refs=REFS, policy=POLICY)
    assert later.commands == []


def test_delete_propagates_when_configured():
    flow = ORDER.model_copy(update={"on_delete": "propagate"})
    link, _ = linked_order()
    deleted = ChangeEvent(system="customcrm", entity="order", id="ord_1", op="delete", version="9", data=None)
    out = handle_change(link, flow, deleted, "order-order:ord_1", now=9, refs=REFS, policy=POLICY)
    assert [(c.op, c.system, c.target_id) for c in out.commands] == [("delete", "businessnxt", "5001")]


def test_product_matches_existing_record_by_key():
    crm = ChangeEvent(system="customcrm", entity="product", id="prd_9", op="upsert", version="1",
                      modified_at=T0, data={"Id": "prd_9", "Sku": "SKU-9", "Name": "Widget", "Description": None,
                                            "Price": "5.00", "StockQuantity": "1", "Url": None})
    erp = ChangeEvent(system="businessnxt", entity="product", id="SKU-9", op="upsert",
                      version=(T0 - timedelta(days=1)).isoformat(), modified_at=T0 - timedelta(days=1),
                      data={"productNo": "SKU-9", "description": "Old widget", "information1": None,
                            "priceQuantity": 5, "quantityPerUnit": 1, "webPage": None})
    a = handle_change(None, PRODUCT, erp, "product-product:SKU-9", now=0, refs=REFS, policy=POLICY)
    assert a.commands == []
    b = handle_change(a.link, PRODUCT, crm, "product-product:SKU-9", now=1, refs=REFS, policy=POLICY)
    assert [c.op for c in b.commands] == ["update"]  # linked, never created; the newer Customcrm name wins
    assert sent(b.commands[0]) == {"description": "Widget"}
    assert ("prd_9", "SKU-9") in a.refs + b.refs


def test_user_creates_order_with_create_only_properties():
    user = ChangeEvent(system="customcrm", entity="user", id="usr_1", op="upsert", version="1", modified_at=T0,
                       data={"Id": "usr_1", "FullName": "Ada", "Email": "ada@example.com", "Title": "CTO",
                             "Phone": None, "Active": True, "CreatedAt": "2026-11-24T23:30:00.000000Z"})
    out = handle_change(None, USER, user, "user-order:usr_1", now=0, refs=REFS, policy=POLICY)
    (cmd,) = out.commands
    assert sent(cmd)["customerNo"] == 10000 and sent(cmd)["orderDate"] == 20261124
    assert sent(cmd)["information1"] == "customcrm:user:usr_1"


def test_retryable_failure_retries_then_dead_letters():
    link, _ = linked_order()
    edit = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=10), Name="x"), "order-order:ord_1",
                         now=1, refs=REFS, policy=Policy(write_retry_max=2, settings=POLICY.settings))
    (cmd,) = edit.commands
    fail = WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system=cmd.system,
                       entity=cmd.entity, op="update", status="retryable", target_id="5001", error="HTTP 503")
    r1 = handle_result(edit.link, ORDER, fail, now=2, refs=REFS, policy=Policy(write_retry_max=2))
    assert r1.commands == [] and r1.wake_at and r1.wake_at > 2
    r2 = handle_tick(r1.link, ORDER, now=r1.wake_at, refs=REFS, policy=Policy(write_retry_max=2))
    (again,) = r2.commands
    assert sent(again) == {"name": "x"} and again.command_id != cmd.command_id
    fail2 = fail.model_copy(update={"command_id": again.command_id})
    r3 = handle_result(r2.link, ORDER, fail2, now=5, refs=REFS, policy=Policy(write_retry_max=2))
    assert r3.commands == [] and len(r3.deadletters) == 1


def test_target_removed_behind_our_back_is_recreated():
    link, _ = linked_order()
    edit = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=10), Name="x"), "order-order:ord_1",
                         now=1, refs=REFS, policy=POLICY)
    (cmd,) = edit.commands
    gone = WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system=cmd.system,
                       entity=cmd.entity, op="update", status="not_found", target_id="5001")
    out = handle_result(edit.link, ORDER, gone, now=2, refs=REFS, policy=POLICY)
    assert [c.op for c in out.commands] == ["create"] and sent(out.commands[0])["name"] == "x"


def test_lost_result_is_resent_after_ack_timeout():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    assert out.wake_at == POLICY.ack_timeout
    again = handle_tick(out.link, ORDER, now=POLICY.ack_timeout, refs=REFS, policy=POLICY)
    assert [c.op for c in again.commands] == ["create"]
    assert again.commands[0].idempotency_key == out.commands[0].idempotency_key


def test_replay_verifies_the_target_with_a_compare_before_write_update():
    link, t_ack = linked_order()
    replay = crm_order().model_copy(update={"origin": "replay"})
    out = handle_change(link, ORDER, replay, "order-order:ord_1", now=5, refs=REFS, policy=POLICY)
    # one verifying update carrying the agreed values; the writer skips it when nothing differs
    (cmd,) = out.commands
    assert cmd.op == "update" and sent(cmd)["name"] == "First order" and "verify" in out.actions


def test_a_skipped_redelivery_keeps_the_parked_link_awake():
    refs = DictRefResolver({})
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=refs, policy=POLICY)
    again = handle_change(out.link, ORDER, crm_order(), "order-order:ord_1", now=1, refs=refs, policy=POLICY)
    assert "skip:stale" in again.actions or "park" in again.actions
    assert engine.next_wake(again.link, POLICY) is not None


def test_a_write_that_meets_a_newer_edit_is_not_applied_and_the_edit_wins():
    link, t_ack = linked_order()
    crm = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=30), Name="crm"), "order-order:ord_1",
                        now=9, refs=REFS, policy=POLICY)
    (cmd,) = crm.commands
    assert cmd.expected_version == t_ack.isoformat()  # derived from the version we had seen
    t_erp = T0 + timedelta(seconds=31)
    conflict = WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system=cmd.system,
                           entity=cmd.entity, op="update", status="conflict", target_id="5001",
                           version=t_erp.isoformat(), record=bnxt_order(t_erp, name="erp").data)
    out = handle_result(crm.link, ORDER, conflict, now=10, refs=REFS, policy=POLICY)
    assert out.link["base"]["Name"][0] == "erp"
    assert [(c.system, sent(c)) for c in out.commands] == [("customcrm", {"Name": "erp"})]


@pytest.mark.parametrize("value", [1, 1.0, True, 0, False, "", None, "1", "2026-11-25", [1], {"a": 1}, [{"b": 2}]])
def test_value_hash_is_the_same_with_the_cache_and_keeps_types_apart(value):
    """``h`` remembers the hashes of scalars; 1, 1.0 and True are equal keys to a plain cache."""
    assert engine.h(value) == engine._h(value)
    assert engine.h(value) == engine.h(value)


def test_value_hash_tells_one_one_point_oh_and_true_apart_and_empty_is_none():
    assert len({engine.h(1), engine.h(1.0), engine.h(True)}) == 3
    assert engine.h("") == engine.h(None)


def test_a_failed_create_result_that_comes_after_the_ack_timeout_is_not_a_dead_letter():
    # a restarted worker ticks before it reads the results the old one left: the create is
    # derived again, and the late failure of the first attempt must neither block nor dead-letter
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    (first,) = out.commands
    again = handle_tick(out.link, ORDER, now=POLICY.ack_timeout, refs=REFS, policy=POLICY)
    (second,) = again.commands
    late = WriteResult(command_id=first.command_id, flow=first.flow, link_key=first.link_key, system=first.system,
                       entity=first.entity, op="create", status="retryable", error="products not linked here yet")
    assert second.command_id != first.command_id
    stale = handle_result(again.link, ORDER, late, now=POLICY.ack_timeout + 1, refs=REFS, policy=POLICY)
    assert stale.deadletters == [] and "skip:stale-result" in stale.actions
    assert not stale.link.get("blocked") and second.command_id in stale.link["inflight"]
    done = handle_result(stale.link, ORDER, ok(second, version=T0.isoformat(), record=None, target_id="5001"),
                         now=POLICY.ack_timeout + 2, refs=REFS, policy=POLICY)
    assert done.link["status"] == "linked" and done.link["ids"][engine.TARGET] == "5001"


def test_a_redelivered_failed_create_result_is_handled_once():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    (cmd,) = out.commands
    fail = WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system=cmd.system,
                       entity=cmd.entity, op="create", status="retryable", error="HTTP 503")
    first = handle_result(out.link, ORDER, fail, now=1, refs=REFS, policy=POLICY)
    assert "retry" in first.actions and first.link["fail"][engine.TARGET] == 1
    again = handle_result(first.link, ORDER, fail, now=1.1, refs=REFS, policy=POLICY)
    assert again.deadletters == [] and not again.link.get("blocked")
    assert again.link["fail"][engine.TARGET] == 1
