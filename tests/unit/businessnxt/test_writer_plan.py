"""Pure writer planning: line numbering, diffs, create values."""
from __future__ import annotations

from connectors.businessnxt.writer import assign_line_numbers, create_value, plan_is_empty, plan_update, same_value
from schemas.command import WriteCommand


def test_same_value_compares_decimals_numerically():
    assert same_value(1.5, "1.50") and same_value(2.0, 2) and same_value(None, None)
    assert same_value(None, "") and same_value("", None)
    assert not same_value(None, 0) and not same_value("a", "b") and not same_value(1.0, "x")


def test_assign_line_numbers():
    lines = assign_line_numbers([{"lineNo": 3, "quantity": 1}, {"quantity": 2}, {"quantity": 3, "orderNo": 9,
                                                                                "changedTimestamp": "x"}])
    assert [(ln["lineNo"], ln["quantity"]) for ln in lines] == [(3, 1), (4, 2), (5, 3)]
    assert all("orderNo" not in ln and "changedTimestamp" not in ln for ln in lines)


def test_plan_update_makes_lines_equal():
    stored = {"orderNo": 1, "name": "A", "customerNo": 10000, "changedTimestamp": "t",
              "orderLines": [{"orderNo": 1, "lineNo": 1, "productNo": "P1", "quantity": 1.0},
                             {"orderNo": 1, "lineNo": 2, "productNo": "P2", "quantity": 2.0}]}
    data = {"name": "B", "customerNo": 10000, "orderNo": 1,
            "orderLines": [{"lineNo": 1, "productNo": "P1", "quantity": "1"}, {"lineNo": 3, "productNo": "P3"}]}
    p = plan_update("order", stored, data)
    assert p["head"] == {"name": "B"}
    assert p["line_updates"] == []
    assert p["line_creates"] == [{"lineNo": 3, "productNo": "P3"}]
    assert p["line_deletes"] == [2]
    same = plan_update("order", stored, {"name": "A", "orderLines": [
        {"lineNo": 1, "productNo": "P1", "quantity": 1}, {"lineNo": 2, "productNo": "P2", "quantity": 2}]})
    assert plan_is_empty(same)
    no_lines = plan_update("order", stored, {"name": "A"})  # lines not mentioned: left alone
    assert plan_is_empty(no_lines)


def test_create_value_stamps_origin():
    c = WriteCommand(command_id="c", flow="f", link_key="k", system="businessnxt", entity="order", op="create",
                     idempotency_key="customcrm:order:o1", origin_field="information1",
                     data={"name": "n", "createdTimestamp": "x", "orderLines": [{"productNo": "P"}]})
    v = create_value("order", c)
    assert v == {"name": "n", "information1": "customcrm:order:o1", "orderLines": [{"productNo": "P", "lineNo": 1}]}


def test_line_delete_alone_touches_the_head():
    stored = {"orderNo": 1, "name": "A", "orderLines": [{"lineNo": 1, "quantity": 1.0}, {"lineNo": 2, "quantity": 1.0}]}
    p = plan_update("order", stored, {"name": "A", "orderLines": [{"lineNo": 1, "quantity": 1}]})
    assert p["line_deletes"] == [2] and p["head"] == {"name": "A"}
