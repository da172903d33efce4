"""After every input: what each side still needs, and the write that gives it (create, update,
delete, the origin stamp), or why none is sent (held by a flow control, parked, blocked)."""
from __future__ import annotations

from typing import Any

from streams.engine.core import (DELETED, MOVED, PENDING, SOURCE, TARGET, Outcome, Policy, _command, _deadletter,
                                 _park, _source_time, _writable, h, other)
from streams.engine.wake import next_wake
from streams.linkkeys import is_target_origin
from streams.linkstate import LinkState
from streams.mapping import Flow, RefResolver


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


def _send_delete(out: Outcome, flow: Flow, side: str, now: float, policy: Policy) -> None:
    link = out.link
    link["seq"] += 1
    cmd = _command(link, flow, side, "delete", None, policy)
    out.commands.append(cmd)
    link["inflight"][cmd.command_id] = {"side": side, "op": "delete", "props": [], "at": now}
    out.actions.append("delete")


def unlinked(flow: Flow, values: dict, refs: RefResolver | None) -> list[str]:
    """The Customcrm products ``values`` name (its lines) that have no Business NXT product yet:
    a write of them to Business NXT waits (the link parks)."""
    return [product for product in flow.source_references(values) if refs is None or refs.to_target(product) is None]


def _create_target(out: Outcome, flow: Flow, now: float, refs: RefResolver | None, policy: Policy) -> None:
    link = out.link
    values = {p: v[0] for p, v in link["base"].items()}
    canonical = {**values, **link["co"]}
    missing = unlinked(flow, canonical, refs)
    if missing:
        _park(out, flow, now, missing, policy)
        return
    link["park"] = None
    extra: dict[str, Any] = {}
    if flow.origin is not None:
        extra["idempotency_key"] = flow.origin_stamp(link["ids"][SOURCE])
        extra["origin_field"] = flow.origin_field
        extra["source_id"] = link["ids"][SOURCE]
    if flow.match is not None:
        match_value = canonical.get(flow.match.source)
        if match_value is not None:
            extra["match"] = {flow.match.target: match_value}
    _send_create(out, flow, TARGET, canonical, values, now, policy, **extra)


def _block(out: Outcome, flow: Flow, side: str, reason: str, payload: dict) -> None:
    """A record that cannot be made from these values: dead letter, and the link waits for a redrive."""
    link = out.link
    link["blocked"] = True
    out.deadletters.append(_deadletter(link, flow, stage="flow", reason=reason, error_type="validation_error",
                                       payload=payload, system=side,
                                       entity=flow.target.entity if side == TARGET else flow.source.entity,
                                       record_id=link["ids"][other(side)]))
    out.actions.append("deadletter")


def _send_create(out: Outcome, flow: Flow, side: str, sent: dict, values: dict, now: float, policy: Policy,
                 **extra) -> None:
    """The create of ``side``'s record, carrying ``sent`` (canonical: ``values``, and for the target
    the create-only values)."""
    link = out.link
    link["seq"] += 1
    cmd = _command(link, flow, side, "create", sent, policy, **extra)
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
    settings = policy.settings
    company = (settings.get("businessnxt_company") if isinstance(settings, dict)
               else getattr(settings, "businessnxt_company", None))
    _send_create(out, flow, SOURCE, values, values, now, policy,
                 idempotency_key=f"businessnxt:{company}:{flow.target.entity}:{link['ids'][TARGET]}")


def _stamp_target(out: Outcome, flow: Flow, now: float, policy: Policy) -> None:
    """Stamp the Business NXT record with its new Customcrm record's id (``create_in_source``)."""
    link = out.link
    link["seq"] += 1
    cmd = _command(link, flow, TARGET, "update", None, policy,
                   data={flow.origin_field: flow.origin_stamp(link["ids"][SOURCE])})
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
    missing = unlinked(flow, changes, refs) if side == TARGET else []
    if missing:
        _park(out, flow, now, missing, policy)
        return
    if side == TARGET and link["park"] and not link["park"].get("event"):
        link["park"] = None
    link["seq"] += 1
    extra: dict[str, Any] = {}
    seen = link["seen"][side]
    if seen is not None:
        # optimistic concurrency: never overwrite an edit made after the one this write comes from
        # (a Customcrm version is its Version number)
        if side == TARGET or seen.isdigit():
            extra["expected_version"] = seen
    cmd = _command(link, flow, side, "update", changes, policy, **extra)
    out.commands.append(cmd)
    link["inflight"][cmd.command_id] = {"side": side, "op": "update", "props": needs, "at": now,
                                        "src_t": _source_time(link, needs)}
    for prop in needs:
        link["wrote"][side][prop] = h(changes[prop])
    out.actions.append(f"update:{side}")
