"""The decision record of one link decision (``schemas.decision``), or none when the decision
is not worth one: pure, the link stage publishes it on ``talkstream.decisions``.

Worth a record: a decision that writes, merges a conflict, parks, dead-letters or is
held by a flow control, or that touched an agreed value. Skips, echoes, acks and
ticks that change nothing are not recorded.
"""
from __future__ import annotations

import orjson

from schemas.change import ChangeEvent
from schemas.command import WriteResult
from streams.engine import Outcome

#: Outcome actions that make a decision worth a record even when it sends nothing.
RECORDED = ("merge", "park", "deadletter", "held", "conflict:merged", "conflict:wait", "deleted", "repair:recreate")


def decision_of(key: str, flow_id: str, kind: str, outcome: Outcome, *, now: float,
                change: ChangeEvent | None = None, result: WriteResult | None = None) -> bytes | None:
    """The record's bytes (compact JSON), or None."""
    if not (outcome.commands or outcome.changes or any(action in RECORDED for action in outcome.actions)):
        return None
    trigger: dict = {"kind": kind}
    if change is not None:
        trigger.update(side=change.system, version=change.version, op=change.op)
    elif result is not None:
        trigger.update(side=result.system, op=result.op, status=result.status)
    return orjson.dumps({
        "schema": "talkstream.decision/v1",
        "at": now,
        "flow": flow_id,
        "link_key": key,
        "trigger": trigger,
        "outcome": outcome.actions,
        "writes": [{"system": c.system, "op": c.op, "properties": list(c.data if c.values is None else c.values)}
                   for c in outcome.commands],
        "changes": outcome.changes,
    }, default=str)
