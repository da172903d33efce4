"""The three inputs of a link (a change of either side, a write's result, a tick) and a redrive:
each merges what it brings into the agreed values, then ``writes._finish`` sends what is missing."""
from __future__ import annotations

from typing import Any

from schemas.change import ChangeEvent
from schemas.command import WriteResult
from streams.canonical import Change
from streams.engine.core import (DELETED, LINKED, MOVED, NEW, PENDING, SOURCE, TARGET, Outcome, Policy,
                                 _deadletter, _forget_written, _park, _ts, _ts_text, _writable, h, other, side_of,
                                 version_newer)
from streams.engine.writes import _block, _finish, _send_delete
from streams.linkstate import LinkState, new_link
from streams.mapping import Flow, RefResolver, is_empty


def handle_change(link: LinkState | None, flow: Flow, change: Change, key: str, *, now: float,
                  refs: RefResolver | None, policy: Policy) -> Outcome:
    """Apply one change event of either side to the link ``key`` (its canonical values: ``change``)."""
    event = change.event
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

    canonical = change.canonical
    if canonical.missing:
        return _park(out, flow, now, canonical.missing, policy, event=event)
    if canonical.error is not None or canonical.values is None:
        out.deadletters.append(_deadletter(link, flow, stage="flow", reason=str(canonical.error),
                                           error_type="validation_error",
                                           payload=event.model_dump(mode="json", by_alias=True),
                                           system=event.system, entity=event.entity, record_id=event.id))
        out.actions.append("deadletter")
        return out
    values = dict(canonical.values)
    if side == SOURCE:
        _note_create_only(out, flow, canonical.co)

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


def handle_result(link: LinkState | None, flow: Flow, result: WriteResult, *, record: dict | None, now: float,
                  refs: RefResolver | None, policy: Policy) -> Outcome:
    """Record the outcome of a write (the sink's acknowledgement); ``record``: the canonical values
    of the record it carries (``streams.canonical.record_values``; None: none)."""
    if link is None:  # a result for a link we do not know (state lost): nothing to record
        return Outcome(new_link(flow.id, result.link_key), actions=["skip:unknown-result"])
    out = Outcome(link)
    sent = link["inflight"].pop(result.command_id, None)
    side = side_of(flow, result.system)
    if sent is None and result.op != "create":
        out.actions.append("skip:duplicate-result")
        return out
    if sent is None and result.status != "ok":
        # a failed create we no longer wait for (a redelivered duplicate of a result already
        # handled, or one that came after the ack timeout re-derived the write): nothing was
        # created, and the write in flight now, if any, has its own result coming; only a create
        # that succeeded still has news (its id)
        out.actions.append("skip:stale-result")
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
            if _merge_record(out, flow, side, result, record):
                # what the record does not hold was not written: let it be derived again
                wrote, rep = link["wrote"][side], link["rep"][side]
                for prop in [p for p, hv in wrote.items() if rep.get(p) != hv]:
                    del wrote[prop]
        else:
            for prop, value in (record or {}).items():
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
        if _merge_record(out, flow, side, result, record):
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

    if result.status == "invalid" and sent is not None:
        # values the system cannot take (the sink did not send them): dead-lettered as any value
        # that cannot be converted, and not derived again until the values change
        sent_values = {p: link["base"][p][0] for p in sent.get("props", []) if p in link["base"]}
        if result.op == "create":
            link["status"] = NEW
            _block(out, flow, side, result.error or "invalid values",
                   {"canonical": {**sent_values, **(link["co"] if side == TARGET else {})}})
        else:
            out.deadletters.append(_deadletter(link, flow, stage="flow", reason=result.error or "invalid values",
                                               error_type="validation_error", payload={"changes": sent_values},
                                               system=side, record_id=link["ids"][side]))
            out.actions.append("deadletter")
        return out

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


def handle_tick(link: LinkState | None, flow: Flow, *, now: float, refs: RefResolver | None, policy: Policy,
                parked: Change | None = None) -> Outcome:
    """A timer fired for this link: retry parked work, failed writes, lost results; ``parked``: the
    change a parked link waits with (``park.event``), made canonical again (its products may be
    linked now)."""
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
    if park and park.get("event") and park.get("next", 0) <= now and parked is not None:
        outcome = handle_change(link, flow, parked, link["key"], now=now, refs=refs, policy=policy)
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


def _merge_record(out: Outcome, flow: Flow, side: str, result: WriteResult, values: dict | None) -> bool:
    """Merge the record a result carries (``values``, canonical), with the time it last changed; False
    when there is none."""
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
