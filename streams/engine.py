"""The sync decisions of one link: pure functions over plain data (no I/O, no Faust).

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

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Callable, Iterable, TypedDict

import orjson

from schemas.change import ChangeEvent
from schemas.command import WriteCommand, WriteResult
from schemas.deadletter import DeadLetter
from streams.mapping import Flow, MappingError, MissingReferences, RefResolver, is_empty
from streams.linkkeys import is_target_origin
from streams.linkstate import LinkState, new_link

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


# --------------------------------------------------------------------------- helpers


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


def _canonical(flow: Flow, side: str, record: dict, refs: RefResolver | None) -> dict:
    return flow.to_canonical("source" if side == SOURCE else "target", record, refs=refs)


def _writable(flow: Flow, side: str, prop: str) -> bool:
    return side == TARGET or flow.syncs_back(prop)


def _deadletter(link: LinkState, flow: Flow, *, stage: str, reason: str, error_type: str, payload: Any,
                system: str | None = None, entity: str | None = None, record_id: str | None = None,
                attempts: int = 1) -> DeadLetter:
    return DeadLetter(stage=stage, flow=flow.id, link_key=link["key"], reason=reason, error_type=error_type,
                      payload=payload, system=system, entity=entity, record_id=record_id, attempts=attempts)


# --------------------------------------------------------------------------- inputs


def handle_change(link: LinkState | None, flow: Flow, event: ChangeEvent, key: str, *, now: float,
                  refs: RefResolver | None, policy: Policy) -> Outcome:
    """Apply one change event of either side to the link ``key``."""
    link = link or new_link(flow.id, key)
    out = Outcome(link)
    side = side_of(flow, event.system)
    replay = event.origin == "replay"

    if link["status"] == MOVED:
        out.actions.append("skip:moved")
        return out
    if link["status"] == DELETED:
        out.actions.append("skip:deleted")
        return _finish(out, flow, now, refs, policy)

    if event.op == "delete":
        return _apply_delete(out, flow, side, event, now, refs, policy)

    if not replay and not version_newer(event.system, event.version, link["seen"][side]):
        out.actions.append("skip:echo" if event.version == link["acked"][side] else "skip:stale")
        return out

    record = event.data or {}
    try:
        if side == SOURCE:  # one conversion: the create-only values (e.g. Sku) are split off
            values = flow.to_canonical("source", record, refs=refs, include_create_only=True)
            co = {p: values.pop(p) for p in flow.create_only_names() if p in values}
            _note_create_only(out, flow, co)
        else:
            values = _canonical(flow, side, record, refs)
    except MissingReferences as exc:
        return _park(out, flow, now, exc.ids, policy, event=event)
    except MappingError as exc:
        out.deadletters.append(_deadletter(link, flow, stage="flow", reason=str(exc), error_type="validation_error",
                                           payload=event.model_dump(mode="json", by_alias=True),
                                           system=event.system, entity=event.entity, record_id=event.id))
        out.actions.append("deadletter")
        return out

    _accept_version(link, side, event)

    if link["ids"][side] is None:
        link["ids"][side] = event.id
        if side == TARGET and flow.match is not None and link["ids"][SOURCE]:
            out.refs.append((link["ids"][SOURCE], event.id))
        if side == TARGET and link["status"] in (NEW, PENDING):
            link["status"] = LINKED if link["ids"][SOURCE] else link["status"]
    if side == SOURCE and link["ids"][TARGET] and link["status"] == NEW:
        link["status"] = LINKED
        if flow.match is not None:
            out.refs.append((event.id, link["ids"][TARGET]))

    _merge(out, flow, side, values, _ts(event.modified_at), replay)
    if replay and side == SOURCE and link["status"] == LINKED and link["ids"][TARGET]:
        # replay verifies the target: the writer compares before it writes, so a target in
        # sync costs a read and no write, and one changed or removed behind our back is repaired
        link["rep"][TARGET] = {}
        link["wrote"][TARGET] = {}
        out.actions.append("verify")
    return _finish(out, flow, now, refs, policy)


def handle_result(link: LinkState | None, flow: Flow, result: WriteResult, *, now: float,
                  refs: RefResolver | None, policy: Policy) -> Outcome:
    """Record the outcome of a write (the sink's acknowledgement)."""
    if link is None:  # a result for a link we do not know (state lost): nothing to record
        return Outcome(new_link(flow.id, result.link_key), actions=["skip:unknown-result"])
    out = Outcome(link)
    sent = link["inflight"].pop(result.command_id, None)
    side = side_of(flow, result.system)
    if sent is None and result.op != "create":
        out.actions.append("skip:duplicate-result")
        return out

    if result.status == "ok":
        link["fail"][side] = 0
        if sent is not None and sent.get("stamp"):
            # the Business NXT record names its new Customcrm record: the pair is an ordinary link
            # at <flow>:<Customcrm Id> from now on (the record's events route there by the stamp)
            link["status"] = MOVED
            out.actions.append("moved")
            return out
        if result.op == "delete":
            link["status"] = DELETED
            out.actions.append("deleted")
            return out
        if result.target_id and link["ids"][side] is None:
            link["ids"][side] = result.target_id
        if result.op == "create":
            if link["ids"][side] != result.target_id and result.target_id:
                # a second create for a link that is already linked: keep the first
                out.actions.append("warn:second-create-result")
            link["status"] = LINKED
            if flow.match is not None and side == TARGET and link["ids"][SOURCE]:
                out.refs.append((link["ids"][SOURCE], link["ids"][TARGET]))
        if result.version is not None:
            link["acked"][side] = result.version
            if version_newer(result.system, result.version, link["seen"][side]):
                link["seen"][side] = result.version
        if result.op == "create":
            # the record as it stands: ours as we wrote it, or one that already existed
            # (matched by key, or found by its origin stamp after a crash or a lost broker)
            if _merge_record(out, flow, side, result, refs):
                # what the record does not hold was not written: let it be derived again
                wrote, rep = link["wrote"][side], link["rep"][side]
                for prop in [p for p, hv in wrote.items() if rep.get(p) != hv]:
                    del wrote[prop]
        else:
            values = _record_values(flow, side, result, refs)
            for prop, value in (values or {}).items():
                link["rep"][side][prop] = h(value)
        out.actions.append(f"ack:{result.op}")
        return _finish(out, flow, now, refs, policy)

    if result.status == "not_found" and result.op == "update":
        # the record was removed behind our back: make it again
        link["ids"][side] = None
        link["rep"][side] = {}
        link["wrote"][side] = {}
        link["status"] = NEW if side == TARGET else link["status"]
        out.actions.append("repair:recreate")
        return _finish(out, flow, now, refs, policy)

    if result.status == "conflict" and sent is not None:
        # the record changed after the write was derived: nothing was written; what it holds
        # now takes part in the merge, and the writes are derived again
        _forget_written(link, side, sent.get("props", []))
        if _merge_record(out, flow, side, result, refs):
            if result.version and version_newer(result.system, result.version, link["seen"][side]):
                link["seen"][side] = result.version
            out.actions.append("conflict:merged")
            return _finish(out, flow, now, refs, policy)
        link["retry_at"] = now + 1.0  # the newer version arrives with the next poll
        out.actions.append("conflict:wait")
        return _finish(out, flow, now, refs, policy)

    if result.status == "retryable" and sent is not None:
        link["fail"][side] += 1
        if link["fail"][side] < policy.write_retry_max:
            _forget_written(link, side, sent.get("props", []))
            if result.op == "create":
                link["status"] = NEW
            out.actions.append("retry")
            link["retry_at"] = now + min(policy.write_backoff_max, 0.5 * 2 ** link["fail"][side])
            return _finish(out, flow, now, refs, policy)

    # permanent, or retries exhausted: dead letter, and stop trying until re-driven
    if result.op == "create":
        link["status"] = NEW
        link["blocked"] = True
    out.deadletters.append(_deadletter(
        link, flow, stage="sink", reason=f"{result.op} on {result.system} {result.entity} failed: {result.error}",
        error_type="permanent_api_error" if result.status == "permanent" else "retries_exhausted",
        payload=result.model_dump(mode="json", by_alias=True), system=result.system, entity=result.entity,
        record_id=result.target_id, attempts=result.attempt))
    out.actions.append("deadletter")
    return out


def handle_tick(link: LinkState | None, flow: Flow, *, now: float, refs: RefResolver | None, policy: Policy) -> Outcome:
    """A timer fired for this link: retry parked work, failed writes, lost results."""
    if link is None:
        return Outcome(new_link(flow.id, "?"), actions=["skip:unknown-link"])
    out = Outcome(link)
    for command_id, sent in list(link["inflight"].items()):
        if now - sent["at"] >= policy.ack_timeout:
            # no result in time (lost command or crashed sink): forget it, the write is re-derived
            del link["inflight"][command_id]
            _forget_written(link, sent["side"], sent.get("props", []))
            if sent["op"] == "create" and link["ids"][sent["side"]] is None:
                link["status"] = NEW
            out.actions.append("retry:ack-timeout")
    if link.get("retry_at") and link["retry_at"] <= now:
        link.pop("retry_at", None)
    park = link.get("park")
    if park and park.get("event") and park.get("next", 0) <= now:
        event = ChangeEvent.model_validate(park["event"])
        outcome = handle_change(link, flow, event, link["key"], now=now, refs=refs, policy=policy)
        outcome.actions.insert(0, "tick")
        return outcome
    out.actions.append("tick")
    return _finish(out, flow, now, refs, policy)


def redrive(link: LinkState | None, flow: Flow, *, now: float, refs: RefResolver | None, policy: Policy) -> Outcome:
    """Clear a dead-lettered block and try again (``talkstream deadletters redrive``)."""
    if link is None:
        return Outcome(new_link(flow.id, "?"), actions=["skip:unknown-link"])
    link.pop("blocked", None)
    link["fail"] = {SOURCE: 0, TARGET: 0}
    link.pop("retry_at", None)
    if link["park"]:
        link["park"] = None
    return handle_tick(link, flow, now=now, refs=refs, policy=policy)


# --------------------------------------------------------------------------- internals


def _record_values(flow: Flow, side: str, result: WriteResult, refs: RefResolver | None) -> dict | None:
    """Canonical values of the record a write result carries (None: none, or unreadable)."""
    if result.record is None:
        return None
    try:
        return _canonical(flow, side, result.record, refs)
    except (MissingReferences, MappingError):
        return None


def _merge_record(out: Outcome, flow: Flow, side: str, result: WriteResult, refs: RefResolver | None) -> bool:
    """Merge the record a result carries, with the time it last changed; False when there is none."""
    values = _record_values(flow, side, result, refs)
    if values is None:
        return False
    t = _ts_text(result.version) if result.version else None
    _merge(out, flow, side, values, t if isinstance(t, float) else None, False)
    return True


def _accept_version(link: LinkState, side: str, event: ChangeEvent) -> None:
    """A newer version of a side's record: remember it, and let a blocked or parked link try again."""
    if event.version is not None:
        link["seen"][side] = event.version
    if link.get("park") and link["park"].get("event"):
        link["park"] = None  # the parked event is superseded by this newer one
    link.pop("blocked", None)


def _note_create_only(out: Outcome, flow: Flow, co: dict) -> None:
    link = out.link
    previous = link["co"]
    if previous and link["status"] != NEW and flow.match is not None:
        for prop, value in co.items():
            if prop == flow.match.source and h(previous.get(prop)) != h(value):
                out.actions.append(f"warn:match-key-changed:{prop}")
        # keep the value the link was made with
        return
    link["co"] = co


def _merge(out: Outcome, flow: Flow, side: str, values: dict, t: float | None, replay: bool) -> None:
    """Fold the values reported by ``side`` into the base (per property), noting each decision
    about an agreed value in ``out.changes``."""
    link = out.link
    base, rep, wrote = link["base"], link["rep"][side], link["wrote"][side]
    merged = False

    def note(prop: str, old: Any, new: Any, why: str) -> None:
        out.changes.append({"property": prop, "side": side, "old": old, "new": new, "why": why})

    for prop, new in values.items():
        hnew = h(new)
        hold = rep.get(prop)
        rep[prop] = hnew
        b = base.get(prop)
        if b is None:
            base[prop] = [new, t, side]
            continue
        if not _writable(flow, side, prop):
            continue  # a "to Businessnxt only" property: the source side stays the master
        hbase = h(b[0])
        if hnew == hbase:
            continue
        if hold == hnew and not replay:
            continue  # this side did not change it: it is behind, and will be sent the base
        if wrote.get(prop) == hnew:
            continue  # our own earlier write read back after the base moved on: it gets the base again
        if replay and b[2] == side:
            note(prop, b[0], new, f"replayed: {side} holds the agreed value")
            base[prop] = [new, t, side]
            continue
        both_changed = hold is not None and hold != hbase
        why = f"{side} changed it"
        if both_changed:
            merged = True
            if flow.empty_never_overwrites and is_empty(new) and not is_empty(b[0]):
                note(prop, b[0], b[0], f"empty never overwrites: {side} emptied it while {b[2]} changed it")
                continue
            if not (flow.empty_never_overwrites and is_empty(b[0]) and not is_empty(new)):
                if b[1] is not None and t is not None and b[1] > t:
                    note(prop, b[0], b[0], f"later change won a conflict: {b[2]}'s is newer than {side}'s")
                    continue  # the other side's value is newer
                why = f"later change won a conflict: {side}'s is newer than {b[2]}'s"
            else:
                why = f"empty never overwrites: {side}'s value fills the empty one"
        elif b[2] != side and b[1] is not None and t is not None and b[1] > t and hold is None:
            note(prop, b[0], b[0], f"{side}'s first report is older than {b[2]}'s value")
            continue  # first report of this side is older than what we hold
        note(prop, b[0], new, why)
        base[prop] = [new, t, side]
    if merged:
        out.actions.append("merge")


def _apply_delete(out: Outcome, flow: Flow, side: str, event: ChangeEvent, now: float,
                  refs: RefResolver | None, policy: Policy) -> Outcome:
    link = out.link
    _accept_version(link, side, event)

    if link["ids"][side] is None:
        link["ids"][side] = event.id
    other_side = other(side)
    if flow.on_delete == "propagate" and link["ids"][other_side]:
        if flow.id in policy.held_flows:
            link["delete_pending"] = other_side  # sent when the flow runs again
            link["held"] = True
            out.actions.append("held")
        else:
            _send_delete(out, flow, other_side, now, policy)
    else:
        out.actions.append("deleted")
    link["status"] = DELETED
    link["deleted"] = side
    link["park"] = None
    return out


def _send_delete(out: Outcome, flow: Flow, side: str, now: float, policy: Policy) -> None:
    link = out.link
    link["seq"] += 1
    cmd = _command(link, flow, side, "delete", {}, policy)
    out.commands.append(cmd)
    link["inflight"][cmd.command_id] = {"side": side, "op": "delete", "props": [], "at": now}
    out.actions.append("delete")


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


def _forget_written(link: LinkState, side: str, props: Iterable[str]) -> None:
    for prop in props:
        link["wrote"][side].pop(prop, None)


def _command(link: LinkState, flow: Flow, side: str, op: str, data: dict, policy: Policy, **extra) -> WriteCommand:
    entity = flow.source.entity if side == SOURCE else flow.target.entity
    return WriteCommand(command_id=f"{link['key']}#{link['seq']}", flow=flow.id, link_key=link["key"],
                        system=side, entity=entity, op=op, target_id=link["ids"][side], data=data,
                        attempt=link["fail"][side] + 1, **extra)


def _source_time(link: LinkState, props: Iterable[str]) -> float | None:
    """Latest modification time of the values a write carries (for the sync latency metric)."""
    times = [link["base"][p][1] for p in props if link["base"][p][1] is not None]
    return max(times) if times else None


def _needs(link: LinkState, flow: Flow, side: str) -> list[str]:
    """Properties whose base value ``side`` neither holds nor has been sent."""
    rep, wrote = link["rep"][side], link["wrote"][side]
    needs = []
    for prop, (value, _t, _side) in link["base"].items():
        if not _writable(flow, side, prop):
            continue
        hv = h(value)
        if rep.get(prop) != hv and wrote.get(prop) != hv:
            needs.append(prop)
    return needs


def has_writes(link: LinkState, flow: Flow) -> bool:
    """Would ``_finish`` send anything for this link: a create, an update of either side, or a
    delete held back while its flow was held?"""
    if link.get("delete_pending"):
        return True
    if link["status"] in (DELETED, MOVED) or link.get("blocked"):
        return False
    if link["ids"][TARGET] is None:
        return link["ids"][SOURCE] is not None and bool(link["base"])
    if link["ids"][SOURCE] is None:
        return _creates_source(link, flow)
    return bool(_needs(link, flow, TARGET)) or (link["ids"][SOURCE] is not None and bool(_needs(link, flow, SOURCE)))


def _hold(out: Outcome, flow: Flow) -> None:
    """The flow is held: remember that this link has something to write, send nothing."""
    if has_writes(out.link, flow):
        out.link["held"] = True
        out.actions.append("held")


def _finish(out: Outcome, flow: Flow, now: float, refs: RefResolver | None, policy: Policy) -> Outcome:
    """Derive the writes each side needs, and the next wake-up."""
    link = out.link
    if flow.id in policy.held_flows:
        _hold(out, flow)
        return out
    link.pop("held", None)
    if link.get("delete_pending"):  # a delete held back while the flow was held
        _send_delete(out, flow, link.pop("delete_pending"), now, policy)
    if link["status"] in (DELETED, MOVED) or link.get("blocked"):
        return out
    if link.get("retry_at") and link["retry_at"] > now:
        out.wake_at = link["retry_at"]
        return out
    busy_sides = {s["side"] for s in link["inflight"].values() if s["op"] == "create"}

    # --- the target side
    if link["ids"][TARGET] is None:
        if link["ids"][SOURCE] is not None and link["base"] and TARGET not in busy_sides:
            if flow.create_in_source:
                # a Customcrm record a Business NXT record may have just made: wait, counted from
                # when it was first seen and from when this worker took its partitions (after a
                # crash, that record's own link sends its create again within one result timeout)
                first_seen = link.setdefault("graced", now)
                ready_at = max(first_seen, policy.recovered_at) + policy.create_grace
                if now < ready_at:
                    link["retry_at"] = out.wake_at = ready_at
                    out.actions.append("wait:create-in-source")
                    return out
            _create_target(out, flow, now, refs, policy)
    elif TARGET not in busy_sides:
        _update(out, flow, TARGET, now, refs, policy)

    # --- the source side: updates once linked; a create only for a Business NXT record's own
    # link (create_in_source), then the stamp that names the new Customcrm record
    if link["ids"][SOURCE] is not None and SOURCE not in busy_sides:
        _update(out, flow, SOURCE, now, refs, policy)
        if is_target_origin(link["key"]) and not any(s.get("stamp") for s in link["inflight"].values()):
            _stamp_target(out, flow, now, policy)
    elif SOURCE not in busy_sides and _creates_source(link, flow):
        _create_source(out, flow, now, policy)

    if out.wake_at is None:
        out.wake_at = next_wake(link, policy)
    return out


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


def _create_target(out: Outcome, flow: Flow, now: float, refs: RefResolver | None, policy: Policy) -> None:
    link = out.link
    values = {p: v[0] for p, v in link["base"].items()}
    canonical = {**values, **link["co"]}
    try:
        data = flow.to_target_data(canonical, create=True, settings=policy.settings, refs=refs,
                                   source_id=link["ids"][SOURCE] if flow.origin else None)
    except MissingReferences as exc:
        _park(out, flow, now, exc.ids, policy)
        return
    except MappingError as exc:
        _block(out, flow, TARGET, exc, {"canonical": canonical})
        return
    link["park"] = None
    extra: dict[str, Any] = {}
    if flow.origin is not None:
        extra["idempotency_key"] = flow.origin_stamp(link["ids"][SOURCE])
        extra["origin_field"] = flow.origin_field
    if flow.match is not None:
        match_value = canonical.get(flow.match.source)
        if match_value is not None:
            extra["match"] = {flow.match.target: match_value}
    _send_create(out, flow, TARGET, data, values, now, policy, **extra)


def _block(out: Outcome, flow: Flow, side: str, exc: MappingError, payload: dict) -> None:
    """A record that cannot be made from these values: dead letter, and the link waits for a redrive."""
    link = out.link
    link["blocked"] = True
    out.deadletters.append(_deadletter(link, flow, stage="flow", reason=str(exc), error_type="validation_error",
                                       payload=payload, system=side,
                                       entity=flow.target.entity if side == TARGET else flow.source.entity,
                                       record_id=link["ids"][other(side)]))
    out.actions.append("deadletter")


def _send_create(out: Outcome, flow: Flow, side: str, data: dict, values: dict, now: float, policy: Policy,
                 **extra) -> None:
    """The create of ``side``'s record, carrying ``values`` (canonical)."""
    link = out.link
    link["seq"] += 1
    cmd = _command(link, flow, side, "create", data, policy, **extra)
    out.commands.append(cmd)
    link["status"] = PENDING
    props = list(values)
    link["inflight"][cmd.command_id] = {"side": side, "op": "create", "props": props, "at": now,
                                        "src_t": _source_time(link, props)}
    for prop in props:
        link["wrote"][side][prop] = h(values[prop])
    out.actions.append("create" if side == TARGET else "create:source")


def _creates_source(link: LinkState, flow: Flow) -> bool:
    """Does this link create its Customcrm record: a Business NXT record's own link (no stamp,
    ``create_in_source``) that holds the record's values?"""
    return (flow.create_in_source and link["ids"][SOURCE] is None and link["ids"][TARGET] is not None
            and bool(link["base"]) and is_target_origin(link["key"]))


def _create_source(out: Outcome, flow: Flow, now: float, policy: Policy) -> None:
    """Create the Customcrm record of a Business NXT record (``create_in_source``), exactly once:
    its Idempotency-Key is derived from the Business NXT company and key."""
    link = out.link
    values = {p: v[0] for p, v in link["base"].items()}
    try:
        # an empty value is left out: the new record takes Customcrm's default (Discount "0", ...)
        data = {k: v for k, v in flow.to_source_data(values, create=True).items() if v is not None}
    except MappingError as exc:
        _block(out, flow, SOURCE, exc, {"canonical": values})
        return
    settings = policy.settings
    company = (settings.get("businessnxt_company") if isinstance(settings, dict)
               else getattr(settings, "businessnxt_company", None))
    _send_create(out, flow, SOURCE, data, values, now, policy,
                 idempotency_key=f"businessnxt:{company}:{flow.target.entity}:{link['ids'][TARGET]}")


def _stamp_target(out: Outcome, flow: Flow, now: float, policy: Policy) -> None:
    """Stamp the Business NXT record with its new Customcrm record's id (``create_in_source``)."""
    link = out.link
    link["seq"] += 1
    cmd = _command(link, flow, TARGET, "update", {flow.origin_field: flow.origin_stamp(link["ids"][SOURCE])},
                   policy)
    out.commands.append(cmd)
    link["inflight"][cmd.command_id] = {"side": TARGET, "op": "update", "props": [], "at": now, "stamp": True}
    out.actions.append("stamp")


def _update(out: Outcome, flow: Flow, side: str, now: float, refs: RefResolver | None, policy: Policy) -> None:
    link = out.link
    needs = _needs(link, flow, side)
    if not needs:
        if side == TARGET and link["park"] and not link["park"].get("event"):
            link["park"] = None
        return
    changes = {p: link["base"][p][0] for p in needs}
    try:
        if side == TARGET:
            data = flow.to_target_data(changes, create=False, settings=policy.settings, refs=refs)
        else:
            data = flow.to_source_data(changes)
    except MissingReferences as exc:
        _park(out, flow, now, exc.ids, policy)
        return
    except MappingError as exc:
        out.deadletters.append(_deadletter(link, flow, stage="flow", reason=str(exc), error_type="validation_error",
                                           payload={"changes": changes}, system=side, record_id=link["ids"][side]))
        out.actions.append("deadletter")
        for prop in needs:
            link["wrote"][side][prop] = h(changes[prop])
        return
    if side == TARGET and link["park"] and not link["park"].get("event"):
        link["park"] = None
    if not data:
        return
    link["seq"] += 1
    extra: dict[str, Any] = {}
    seen = link["seen"][side]
    if seen is not None:
        # optimistic concurrency: never overwrite an edit made after the one this write comes from
        # (a Customcrm version is its Version number)
        if side == TARGET or seen.isdigit():
            extra["expected_version"] = seen
    cmd = _command(link, flow, side, "update", data, policy, **extra)
    out.commands.append(cmd)
    link["inflight"][cmd.command_id] = {"side": side, "op": "update", "props": needs, "at": now,
                                        "src_t": _source_time(link, needs)}
    for prop in needs:
        link["wrote"][side][prop] = h(changes[prop])
    out.actions.append(f"update:{side}")
