"""The bench's per-flow progress record (``bench.__main__.FlowProgress``): when each flow's
first link and its last expected link were seen linked."""
import time

from bench.__main__ import FlowProgress


def test_first_and_all_linked_times_per_flow(monkeypatch):
    clock = iter([10.0, 11.0, 12.5, 14.0])
    monkeypatch.setattr(time, "monotonic", lambda: next(clock))
    progress = FlowProgress(10.0, {"products": 3, "orders": 2})
    progress.note({"products": 0, "orders": 0})  # t = 0: nothing linked yet
    progress.note({"products": 1, "orders": 0})  # t = 1
    progress.note({"products": 3, "orders": 1})  # t = 2.5
    progress.note({"products": 3, "orders": 2})  # t = 4
    assert progress.first == {"products": 1.0, "orders": 2.5}
    assert progress.all == {"products": 2.5, "orders": 4.0}


def test_a_flow_not_expected_has_no_end_time(monkeypatch):
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)
    progress = FlowProgress(0.0, {"products": 1})
    progress.note({"products": 1, "extra": 7})
    assert progress.first == {"products": 5.0, "extra": 5.0}
    assert progress.all == {"products": 5.0}
