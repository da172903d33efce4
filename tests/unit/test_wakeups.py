"""The wake-up schedule: which links get a tick, and that ticks do not pile up."""
from __future__ import annotations

from streams.engine import Policy, Wake
from streams.wakeups import WakeSchedule

POLICY = Policy(park_timeout=100, ack_timeout=30)  # heartbeat 10 s


def lost_result(sent_at: float) -> Wake:
    return Wake(at=sent_at + 30, other_at=sent_at + 30, missing=())


def parked(at: float, missing=("prd_1",)) -> Wake:
    return Wake(at=at + 0.25, other_at=None, missing=tuple(missing), parked_at=at)


def test_a_link_is_ticked_when_due_and_not_before():
    s = WakeSchedule(POLICY)
    s.set("a", lost_result(0))
    assert s.due(29.9) == []
    assert s.due(30) == ["a"]


def test_one_tick_until_the_link_was_processed():
    s = WakeSchedule(POLICY, retick_after=60)
    s.set("a", lost_result(0))
    assert s.due(30) == ["a"]
    # the tick waits behind a backlog: later checks send no second tick
    assert s.due(31) == [] and s.due(45) == []
    # processed (still needing a tick, e.g. the write was re-sent): ticked again when due
    s.set("a", lost_result(50))
    assert s.due(79) == [] and s.due(80) == ["a"]


def test_a_tick_never_processed_is_sent_again_after_a_while():
    s = WakeSchedule(POLICY, retick_after=60)
    s.set("a", lost_result(0))
    assert s.due(30) == ["a"]
    assert s.due(89) == []
    assert s.due(90) == ["a"]


def test_a_parked_order_is_ticked_when_its_products_are_linked_or_on_its_heartbeat():
    s = WakeSchedule(POLICY)
    s.set("o", parked(0))
    assert s.due(1, linked=lambda p: False) == []  # its own backoff does not matter
    assert s.due(2) == []  # no new product references: not even looked at
    assert s.due(3, linked=lambda p: p == "prd_1") == ["o"]  # linked: retried at once


def test_a_parked_order_whose_products_stay_unlinked_is_ticked_on_its_heartbeat():
    s = WakeSchedule(POLICY)
    s.set("o", parked(0))
    assert s.due(POLICY.park_heartbeat - 0.1) == []
    assert s.due(POLICY.park_heartbeat) == ["o"]


def test_a_link_that_needs_no_tick_leaves_the_schedule():
    s = WakeSchedule(POLICY)
    s.set("a", lost_result(0))
    s.set("a", None)
    assert len(s) == 0 and s.due(1000) == []


def test_links_that_stopped_waiting_do_not_keep_heap_entries():
    """After a load every link waited for its result once and is idle now: the heap does not keep
    an entry per link until the ack timeout has passed (it took 419 bytes per link)."""
    s = WakeSchedule(POLICY)
    for i in range(5000):
        s.set(f"l{i}", lost_result(0))  # a write in flight
    s.set("o", parked(0))  # one order still waiting
    for i in range(5000):
        s.set(f"l{i}", None)  # its result came: idle
    assert len(s._heap) <= 2 * len(s.wakes) + 1024
    # the waiting order is still ticked on its heartbeat
    assert s.due(POLICY.park_heartbeat) == ["o"]


def test_a_compacted_heap_still_ticks_every_waiting_link_once():
    s = WakeSchedule(POLICY, retick_after=600)
    for i in range(10000):
        s.set(f"l{i}", lost_result(i % 7))
    assert sorted(s.due(31)) == sorted(f"l{i}" for i in range(10000) if i % 7 <= 1)  # ticked, not processed
    for i in range(10000):
        if i % 10:
            s.set(f"l{i}", None)  # 9 in 10 got their results: the heap is rebuilt on the way
    assert len(s._heap) < 10000
    waiting = sorted(f"l{i}" for i in range(0, 10000, 10))
    # those ticked at 31 and never processed are sent again after retick_after, the others when due
    assert sorted(s.due(100)) == sorted(k for k in waiting if int(k[1:]) % 7 > 1)
    assert sorted(s.due(31 + s.retick_after)) == sorted(k for k in waiting if int(k[1:]) % 7 <= 1)
    assert s.due(650) == []


def test_newly_linked_products_wake_only_the_orders_waiting_for_them():
    s = WakeSchedule(POLICY)
    s.set("o1", parked(0, ["prd_1"]))
    s.set("o2", parked(0, ["prd_2", "prd_3"]))
    linked = {"prd_1", "prd_2"}
    assert s.due(1, linked=linked.__contains__, fresh=["prd_9"]) == []  # nobody waits for prd_9
    assert s.due(2, linked=linked.__contains__, fresh=["prd_2"]) == []  # o2 still waits for prd_3
    assert s.due(3, linked=linked.__contains__, fresh=["prd_1", "prd_2"]) == ["o1"]
    linked.add("prd_3")
    assert s.due(4, linked=linked.__contains__, fresh=["prd_3"]) == ["o2"]


def test_a_check_looks_only_at_the_orders_waiting_for_what_was_linked():
    """Thousands of parked orders: a check after one new product reference looks up that
    order's products only (walking every parked order twice a second cost 2 % of a worker)."""
    s = WakeSchedule(POLICY)
    for i in range(10000):
        s.set(f"o{i}", parked(0, [f"prd_{i}", "prd_common"]))
    looked_up: list[str] = []

    def linked(product: str) -> bool:
        looked_up.append(product)
        return product in ("prd_7", "prd_common")

    assert s.due(1, linked=linked, fresh=["prd_7"]) == ["o7"]
    assert sorted(set(looked_up)) == ["prd_7", "prd_common"]


def test_the_index_of_waiting_orders_follows_their_state():
    s = WakeSchedule(POLICY)
    s.set("o", parked(0, ["prd_1", "prd_2"]))
    s.set("o", parked(1, ["prd_2"]))  # prd_1 was linked: still waits for prd_2
    assert s.waiting_on == {"prd_2": {"o"}}
    s.set("o", lost_result(2))  # created: no longer parked
    assert s.waiting_on == {}
    s.set("o", None)  # its result came
    s.set("p", parked(0, ["prd_5"]))
    s.set("p", None)
    assert s.waiting_on == {} and s.due(100, linked=lambda p: True, fresh=["prd_5"]) == []
    s.set("q", parked(0, ["prd_6"]))
    s.clear()
    assert s.waiting_on == {}
