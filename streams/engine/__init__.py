"""The sync decisions of one link: pure functions over plain data (no I/O, no Faust).

They decide on canonical values only: what enters is made canonical at the edge
of the link stage (``streams.canonical``), and a command carries canonical values
that the sink encodes for its system (``streams.encoding``).

``decide`` (the inputs), ``writes`` (what each side needs and the write that gives it),
``wake`` (when a link needs a tick), ``core`` (what they share).

A *link* joins one Customcrm record (the flow's source side) and one
Businessnxt record (the target side). Its state is plain JSON data kept in a
Faust table, every key declared in ``streams.linkstate.LinkState``. Three kinds of input reach a
link, in per-link order:

- ``handle_change``: a change event read from either system;
- ``handle_result``: the outcome of a write we asked a sink to make;
- ``handle_tick``: a timer (retry a parked or failed write).

Each returns an :class:`Outcome`: the new state plus the commands to send,
dead letters, product-reference updates and the next wake-up time.

The model is *desired state*: ``base`` holds, per property, the agreed value
with the time and side it came from (the merge base). ``rep`` holds, per side,
a short hash of what that side last reported, and ``wrote`` what we last
wrote to it. After every input, each side that does not hold the base value
(and has not already been sent it) gets one write. This gives, with no
special cases:

- echo suppression: our own write read back agrees with the base -> no write;
- one-sided edits win; edits on both sides merge per property (later
  modification time wins; empty never overwrites non-empty when configured);
- an older version never overwrites a newer one (versions per side);
- repair and retry: a side that lost a write simply still needs it.
"""
from __future__ import annotations

from streams.engine.core import (DELETED, LINKED, MOVED, NEW, PENDING, SIDES, SOURCE, TARGET, Change, Outcome, Policy,
                                 _h, h, other, side_of, version_newer)
from streams.engine.decide import handle_change, handle_result, handle_tick, redrive
from streams.engine.wake import Wake, next_wake, provisional, tick_useful, wake_plan
from streams.engine.writes import has_writes
from streams.linkstate import LinkState, new_link

__all__ = ["DELETED", "LINKED", "MOVED", "NEW", "PENDING", "SIDES", "SOURCE", "TARGET", "Change", "LinkState",
           "Outcome", "Policy", "Wake", "_h", "h", "handle_change", "handle_result", "handle_tick", "has_writes",
           "new_link", "next_wake", "other", "provisional", "redrive", "side_of", "tick_useful", "version_newer",
           "wake_plan"]
