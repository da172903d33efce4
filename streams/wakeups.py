"""When each local link needs a tick: an in-memory schedule derived from the links table.

A link asks for a tick when a write got no result in time, a retry is due, or an
order waits (parks) until its products are linked (``engine.wake_plan``). The
schedule is rebuilt from the links table after every recovery, so it needs no
topic of its own. It is cheap when thousands of links wait:

- a heap orders the wake-up times, so a check looks only at links that are due;
- a parked order is looked at again when one of the products it waits for is
  linked (the caller names the newly linked products; an index maps each
  product to the orders waiting for it, so a check costs what came in, not
  what waits) or when its heartbeat is due, not on every check;
- once a tick is sent, no other is sent for that link until the link has been
  processed (``set`` is called with its new state). Without that, a backlog on
  the flow topic longer than the check interval made ticks pile up behind each
  other (measured: 47,000 extra flow messages in a 21,000-record load);
- the heap is rebuilt when entries of links that stopped waiting dominate it
  (they took 419 bytes per link right after a 21,000-record load).
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterable

from streams.engine import Policy, Wake, tick_useful


#: Heap entries beyond twice the waiting links that are tolerated before the heap is rebuilt.
COMPACT_SLACK = 1024


def _never_linked(_product: str) -> bool:
    return False


class WakeSchedule:
    def __init__(self, policy: Policy, *, retick_after: float = 60.0) -> None:
        self.policy = policy
        self.retick_after = retick_after  # a tick sent but never processed is sent again after this
        self.wakes: dict[str, Wake] = {}
        self.parked: dict[str, Wake] = {}
        self._heap: list[tuple[float, str]] = []
        self._sent: dict[str, float] = {}  # link key -> when its tick was sent (until it is processed)
        self.waiting_on: dict[str, set[str]] = {}  # product -> the parked orders that wait for it

    def __len__(self) -> int:
        return len(self.wakes)

    def held(self) -> tuple:
        """Everything the schedule keeps in memory (for the worker's state-size walk)."""
        return self.wakes, self.parked, self._heap, self._sent, self.waiting_on

    def clear(self) -> None:
        self.wakes.clear()
        self.parked.clear()
        self._heap.clear()
        self._sent.clear()
        self.waiting_on.clear()

    def set(self, key: str, wake: Wake | None) -> None:
        """The link ``key`` was processed; ``wake`` is its new plan (None: no tick needed)."""
        was_ticked = self._sent.pop(key, None) is not None
        old = self.wakes.get(key)
        if old is not None and old.missing and (wake is None or wake.missing != old.missing):
            self._unindex(key, old.missing)
        if wake is None:
            self.wakes.pop(key, None)
            self.parked.pop(key, None)
            self._maybe_compact()
            return
        self.wakes[key] = wake
        if wake.missing:
            self.parked[key] = wake
            if old is None or old.missing != wake.missing:
                for product in wake.missing:
                    self.waiting_on.setdefault(product, set()).add(key)
        else:
            self.parked.pop(key, None)
        if was_ticked or old != wake:
            heapq.heappush(self._heap, (self._first_time(wake), key))
            self._maybe_compact()

    def _unindex(self, key: str, products: tuple[str, ...]) -> None:
        for product in products:
            waiting = self.waiting_on.get(product)
            if waiting is not None:
                waiting.discard(key)
                if not waiting:
                    del self.waiting_on[product]

    def _maybe_compact(self) -> None:
        """Entries of links that no longer wait (linked, idle) stay in the heap until their time
        (up to the ack timeout): rebuild it, one entry per waiting link, once they dominate.
        Extra entries are harmless (``due`` checks each link), so nothing is lost by this."""
        if len(self._heap) <= 2 * (len(self.wakes) + len(self._sent)) + COMPACT_SLACK:
            return
        self._heap = [(self._first_time(wake), key) for key, wake in self.wakes.items()]
        self._heap += [(sent + self.retick_after, key) for key, sent in self._sent.items()]
        heapq.heapify(self._heap)

    def _first_time(self, wake: Wake) -> float:
        """When a tick could first be useful, new product links aside."""
        own = wake.parked_at + self.policy.park_heartbeat if wake.missing else wake.at
        return own if wake.other_at is None else min(own, wake.other_at)

    def due(self, now: float, linked: Callable[[str], bool] | None = None,
            fresh: Iterable[str] | None = None) -> list[str]:
        """The links to tick now. ``linked`` tells whether a product is linked; pass it
        only when new product references came in since the last call, and with it
        ``fresh``, the products linked since then: only the orders waiting for one of
        them are looked at (``fresh=None``: every parked order)."""
        out: list[str] = []
        chosen: set[str] = set()

        def add(key: str) -> None:
            sent = self._sent.get(key)
            if sent is not None and now - sent < self.retick_after:
                heapq.heappush(self._heap, (sent + self.retick_after, key))
                return
            self._sent[key] = now
            heapq.heappush(self._heap, (now + self.retick_after, key))  # in case it is never processed
            chosen.add(key)
            out.append(key)

        while self._heap and self._heap[0][0] <= now:
            _at, key = heapq.heappop(self._heap)
            wake = self.wakes.get(key)
            if wake is not None and key not in chosen and tick_useful(wake, now, _never_linked, self.policy):
                add(key)
        if linked is not None:
            if fresh is None:
                candidates: Iterable[str] = list(self.parked)
            else:
                candidates = {key for product in fresh for key in self.waiting_on.get(product, ())}
            for key in candidates:
                wake = self.parked.get(key)
                if wake is not None and key not in chosen and all(linked(product) for product in wake.missing):
                    add(key)
        return out
