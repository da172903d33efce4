"""``streams.decisions``: which link decisions get a record on ``talkstream.decisions``, and
that the record is what ``schemas/decision.v1.schema.json`` says."""
from __future__ import annotations

from datetime import timedelta

import orjson

from schemas.decision import Decision
from streams.decisions import decision_of
from tests.unit.edge import handle_change
from tests.unit.test_engine import ORDER, POLICY, REFS, T0, bnxt_order, crm_order, linked_order


def test_a_conflict_is_recorded_with_what_triggered_it_and_why_each_value_is_what_it_is():
    link, _ = linked_order()
    crm = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=30), Name="crm"), "order-order:ord_1",
                        now=9, refs=REFS, policy=POLICY)
    change = bnxt_order(T0 + timedelta(seconds=35), name="erp")
    bn = handle_change(crm.link, ORDER, change, "order-order:ord_1", now=10, refs=REFS, policy=POLICY)
    raw = decision_of("order-order:ord_1", ORDER.id, "change", bn, now=10.0, change=change)
    record = Decision.model_validate(orjson.loads(raw))
    assert record.link_key == "order-order:ord_1" and record.flow == "order-order"
    assert (record.trigger.kind, record.trigger.side, record.trigger.version) == \
        ("change", "businessnxt", change.version)
    assert "merge" in record.outcome and [(w.system, w.op) for w in record.writes] == [("customcrm", "update")]
    (name,) = [c for c in record.changes if c.property == "Name"]
    assert (name.old, name.new) == ("crm", "erp") and name.why.startswith("later change won a conflict")


def test_a_decision_that_changes_nothing_gets_no_record():
    link, _ = linked_order()
    echo = handle_change(link, ORDER, crm_order(), "order-order:ord_1", now=5, refs=REFS, policy=POLICY)
    assert echo.commands == [] and decision_of("order-order:ord_1", ORDER.id, "change", echo, now=5.0) is None


def test_a_create_is_recorded_without_property_changes():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    record = Decision.model_validate(orjson.loads(decision_of("order-order:ord_1", ORDER.id, "change", out, now=0.0)))
    assert record.outcome == ["create"] and record.changes == [] and record.writes[0].op == "create"
