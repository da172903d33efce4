"""Flow controls (streams.controls, streams.engine): a held flow decides but writes nothing, and
writes each link once with the latest agreed values when it runs again; the breaker counts
updates and deletes per flow and system in a sliding window."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from streams import controls, engine
from streams.controls import Breaker, FlowControl, counted_writes
from tests.unit.edge import handle_change, handle_tick
from tests.unit.test_engine import ORDER, POLICY, REFS, T0, bnxt_order, crm_order, linked_order, sent

HELD = replace(POLICY, held_flows=frozenset({"order-order"}))


def test_a_held_flow_decides_but_writes_nothing_then_one_write_with_the_latest_values():
    link, t_ack = linked_order()
    first = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=5), Name="Edit one"),
                          "order-order:ord_1", now=10, refs=REFS, policy=HELD)
    assert first.commands == [] and first.link["held"] and "held" in first.actions
    second = handle_change(first.link, ORDER, crm_order(3, T0 + timedelta(seconds=6), Name="Edit two"),
                           "order-order:ord_1", now=11, refs=REFS, policy=HELD)
    assert second.commands == [] and second.link["base"]["Name"][0] == "Edit two"  # the state keeps up
    # the flow runs again: one tick, one write, the latest value
    resumed = handle_tick(second.link, ORDER, now=12, refs=REFS, policy=POLICY)
    (update,) = resumed.commands
    assert update.op == "update" and update.system == "businessnxt" and sent(update)["name"] == "Edit two"
    assert "held" not in resumed.link
    assert handle_tick(resumed.link, ORDER, now=13, refs=REFS, policy=POLICY).commands == []  # once


def test_a_link_with_nothing_to_write_is_not_marked_held():
    link, t_ack = linked_order()
    echo = handle_change(link, ORDER, bnxt_order(t_ack), "order-order:ord_1", now=5, refs=REFS, policy=HELD)
    assert echo.commands == [] and "held" not in echo.link


def test_a_new_record_of_a_held_flow_is_created_only_when_it_runs():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=HELD)
    assert out.commands == [] and out.link["held"] and out.link["status"] == engine.NEW
    created = handle_tick(out.link, ORDER, now=1, refs=REFS, policy=POLICY)
    assert [c.op for c in created.commands] == ["create"]


def test_the_breaker_admits_up_to_its_limit_in_a_sliding_window():
    breaker = Breaker(max_writes=3, window=10.0)
    assert breaker.admits("f", {"businessnxt": 2}, now=0) is None
    breaker.note("f", {"businessnxt": 2}, now=0)
    assert breaker.admits("f", {"businessnxt": 1}, now=1) is None
    breaker.note("f", {"businessnxt": 1}, now=1)
    assert breaker.admits("f", {"businessnxt": 1}, now=2) == "businessnxt"  # the fourth would pass 3
    assert breaker.admits("f", {"customcrm": 1}, now=2) is None  # per system
    assert breaker.admits("g", {"businessnxt": 1}, now=2) is None  # per flow
    assert breaker.admits("f", {"businessnxt": 1}, now=10.5) is None  # the first two left the window
    breaker.reset("f")
    assert breaker.count("f", "businessnxt", now=2) == 0


def test_a_breaker_of_zero_is_off():
    breaker = Breaker(max_writes=0, window=10.0)
    breaker.note("f", {"businessnxt": 10_000}, now=0)
    assert breaker.admits("f", {"businessnxt": 10_000}, now=0) is None


def test_only_updates_and_deletes_count():
    link, _ = linked_order()
    create = handle_change(None, ORDER, crm_order(), "order-order:ord_2", now=0, refs=REFS, policy=POLICY)
    update = handle_change(link, ORDER, crm_order(2, T0 + timedelta(seconds=5), Name="Edit"),
                           "order-order:ord_1", now=10, refs=REFS, policy=POLICY)
    assert counted_writes(create.commands) == {}
    assert counted_writes(update.commands) == {"businessnxt": 1}


def test_flow_control_records_round_trip_and_say_why():
    trip = controls.tripped("order-order", "businessnxt", 11, 10, 300.0)
    again = FlowControl.from_bytes(trip.to_bytes())
    assert again.state == "tripped" and again.detail["system"] == "businessnxt"
    assert "breaker" in again.describe() and "businessnxt" in again.describe() and "300" in again.describe()
    assert controls.pause("order-order").describe() == "paused: paused by an operator"
    assert controls.resume("order-order").describe() == "running"
