"""When a link needs a tick (a parked order, a retry, a write with no result), and whether its
state is provisional (a write in flight: the changelog may wait for the result)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from streams.engine.core import DELETED, MOVED, Policy
from streams.linkstate import LinkState


def provisional(link: LinkState) -> bool:
    """Will a later state replace this one soon: a write in flight awaits its result, or an
    order waits for its products? (The worker puts such a state on the changelog only at its
    next offset commit; usually the state after it comes first.)"""
    return bool(link["inflight"]) or bool(link["park"])


def next_wake(link: LinkState, policy: Policy) -> float | None:
    """When this link needs a tick, from its state alone (None: never)."""
    wake = wake_plan(link, policy)
    return wake.at if wake else None


@dataclass(slots=True)
class Wake:
    """When a link needs a tick, and why (see ``tick_useful``)."""
    at: float                    # the earliest wake-up
    other_at: float | None       # the earliest that is not a parked order's retry (lost results, retries)
    missing: tuple[str, ...]     # a parked order's unlinked product ids (empty: not parked)
    parked_at: float = 0.0       # when the parked order last tried


def wake_plan(link: LinkState, policy: Policy) -> Wake | None:
    """The link's wake-ups, from its state alone (None: it never needs a tick)."""
    if link["status"] in (DELETED, MOVED) or link.get("blocked"):
        return None
    others = [s["at"] + policy.ack_timeout for s in link["inflight"].values()]
    if link.get("retry_at"):
        others.append(link["retry_at"])
    other_at = min(others) if others else None
    park = link["park"]
    if park:
        at = park["next"] if other_at is None else min(other_at, park["next"])
        return Wake(at, other_at, tuple(park.get("missing") or ()), park.get("last", 0.0))
    return Wake(other_at, other_at, ()) if other_at is not None else None


def tick_useful(wake: Wake, now: float, linked: Callable[[str], bool], policy: Policy) -> bool:
    """Is a tick worth sending now? A parked order retries as soon as its products are
    linked, and otherwise only every ``park_heartbeat`` seconds (which keeps its
    waiting-time bound counting): no tick storm while products are still being created."""
    if wake.other_at is not None and wake.other_at <= now:
        return True
    if wake.missing:  # its own backoff does not matter: the products do
        return now - wake.parked_at >= policy.park_heartbeat or all(linked(m) for m in wake.missing)
    return wake.at <= now
