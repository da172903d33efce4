"""What every decision shares: the sides, the link statuses, the policy, the outcome, hashes,
versions, and the small steps (a command, a dead letter, parking an order) the others build on."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Iterable, TypedDict

import orjson

from schemas.change import ChangeEvent
from schemas.command import WriteCommand
from schemas.deadletter import DeadLetter
from streams.linkstate import LinkState
from streams.mapping import Flow

SOURCE = "customcrm"
TARGET = "businessnxt"
SIDES = (SOURCE, TARGET)

#: link status values; ``moved``: a Business NXT record's own link (``create_in_source``) once
#: its Customcrm record exists and the record is stamped: the pair lives on at ``<flow>:<Customcrm Id>``
NEW, PENDING, LINKED, DELETED, MOVED = "new", "pending-create", "linked", "deleted", "moved"


@dataclass
class Policy:
    """Tunables of the decisions (from settings)."""

    park_timeout: float = 300.0  # seconds an order may wait for its product links
    park_backoff_max: float = 30.0  # longest pause between two retries of a parked order
    write_retry_max: int = 8  # attempts of a retryable write before dead-lettering
    write_backoff_max: float = 30.0
    ack_timeout: float = 30.0  # re-send a write that got no result in this time
    settings: Any = None  # for setting-based properties (internal_customer_no)
    #: flows that send no write now (paused or tripped: ``streams.controls``); their links
    #: remember that they have something to write (``held``) and write it once the flow runs
    held_flows: frozenset[str] = frozenset()
    #: when this worker last took its partitions (epoch seconds): ``create_grace`` counts from it too
    recovered_at: float = 0.0

    @property
    def create_grace(self) -> float:
        """With ``create_in_source``, how long a new Customcrm record waits before its Business
        NXT record is created, from when it was first seen and from when the worker took its
        partitions: a Customcrm record that a Business NXT record just created (its create's
        result maybe lost in a crash) is stamped on that record by then, and the create finds it
        by its stamp instead of making a second one. Two result timeouts."""
        return 2 * self.ack_timeout

    @property
    def park_heartbeat(self) -> float:
        """Longest pause between two retries of a parked order whose products are still
        unlinked (retries also come as soon as they are linked): a tenth of its bound."""
        return min(self.park_backoff_max, max(1.0, self.park_timeout / 10))


class Change(TypedDict):
    """A side's report about one property, decided (``schemas.decision.PropertyChange``)."""

    property: str
    side: str
    old: Any  # the agreed value before
    new: Any  # and after (equal to old: the report did not win)
    why: str


@dataclass
class Outcome:
    link: LinkState
    commands: list[WriteCommand] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    refs: list[tuple[str, str]] = field(default_factory=list)  # (customcrm product id, productNo)
    wake_at: float | None = None  # epoch seconds; None: no timer needed
    actions: list[str] = field(default_factory=list)  # what happened, for metrics and logs
    #: per property a side reported a new value for: the agreed value before and after, and why
    #: (``schemas.decision.PropertyChange``; a record's first values are not listed)
    changes: list[Change] = field(default_factory=list)


def h(value: Any) -> str:
    """Short hash of a canonical value (``None`` and ``""`` are equal)."""
    if value.__class__ in _SCALARS:  # the same few values (dates, statuses, prices) come again and again
        return _h_scalar(value)
    return _h(value)


def _h(value: Any) -> str:
    if value == "":
        value = None
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=6).hexdigest()


_SCALARS = frozenset({str, int, float, bool, type(None)})
_h_scalar = lru_cache(maxsize=16384, typed=True)(_h)  # typed: 1, 1.0 and True hash differently


def other(side: str) -> str:
    return TARGET if side == SOURCE else SOURCE


def _ts(dt: datetime | None) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def version_newer(system: str, new: str | None, old: str | None) -> bool:
    """Is version ``new`` strictly newer than ``old``? Unknown versions are never "older"."""
    if new is None or old is None:
        return True
    if system == SOURCE:
        try:
            return int(new) > int(old)
        except ValueError:
            return new > old
    return _ts_text(new) > _ts_text(old)


def _ts_text(version: str) -> float | str:
    try:
        return datetime.fromisoformat(version.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return version


def side_of(flow: Flow, system: str) -> str:
    if system == flow.source.system:
        return SOURCE
    if system == flow.target.system:
        return TARGET
    raise ValueError(f"flow {flow.id} has no side in system {system}")


def _writable(flow: Flow, side: str, prop: str) -> bool:
    return side == TARGET or flow.syncs_back(prop)


def _deadletter(link: LinkState, flow: Flow, *, stage: str, reason: str, error_type: str, payload: Any,
                system: str | None = None, entity: str | None = None, record_id: str | None = None,
                attempts: int = 1) -> DeadLetter:
    return DeadLetter(stage=stage, flow=flow.id, link_key=link["key"], reason=reason, error_type=error_type,
                      payload=payload, system=system, entity=entity, record_id=record_id, attempts=attempts)


def _forget_written(link: LinkState, side: str, props: Iterable[str]) -> None:
    for prop in props:
        link["wrote"][side].pop(prop, None)


def _command(link: LinkState, flow: Flow, side: str, op: str, values: dict | None, policy: Policy,
             **extra) -> WriteCommand:
    """A write of ``side``'s record carrying canonical ``values`` (the sink encodes them:
    ``streams.encoding``), or ``data`` for the target as it is (in ``extra``)."""
    entity = flow.source.entity if side == SOURCE else flow.target.entity
    return WriteCommand(command_id=f"{link['key']}#{link['seq']}", flow=flow.id, link_key=link["key"],
                        system=side, entity=entity, op=op, target_id=link["ids"][side], values=values,
                        attempt=link["fail"][side] + 1, **extra)


def _source_time(link: LinkState, props: Iterable[str]) -> float | None:
    """Latest modification time of the values a write carries (for the sync latency metric)."""
    times = [link["base"][p][1] for p in props if link["base"][p][1] is not None]
    return max(times) if times else None


def _park(out: Outcome, flow: Flow, now: float, missing: Iterable[str], policy: Policy, *,
          event: ChangeEvent | None = None) -> Outcome:
    link = out.link
    park = link["park"] or {"since": now, "last": now, "waited": 0.0, "attempts": 0}
    park["attempts"] += 1
    # time spent waiting while a worker ran: a stopped or crashed worker does not use up the bound
    park["waited"] = park.get("waited", 0.0) + min(max(0.0, now - park.get("last", now)),
                                                   policy.park_heartbeat + 1.0)
    park["last"] = now
    park["missing"] = sorted(set(missing))
    if event is not None:
        park["event"] = event.model_dump(mode="json", by_alias=True)
    if park["waited"] >= policy.park_timeout:
        link["park"] = None
        link["blocked"] = True
        payload = park.get("event") or {"link": link["key"], "base": {k: v[0] for k, v in link["base"].items()}}
        out.deadletters.append(_deadletter(
            link, flow, stage="flow", error_type="unknown_reference", attempts=park["attempts"], payload=payload,
            reason=f"{flow.id} {link['key']}: referenced products not linked after {policy.park_timeout:.0f} s: "
                   + ", ".join(park["missing"])))
        out.actions.append("deadletter")
        return out
    park["next"] = now + min(policy.park_heartbeat, 0.25 * 2 ** (park["attempts"] - 1))
    link["park"] = park
    out.actions.append("park")
    out.wake_at = park["next"]
    return out
