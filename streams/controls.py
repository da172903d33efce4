"""Flow controls (pure): each flow's state — running, paused, tripped — and the circuit breaker.

The state of every flow lives in the compacted topic ``talkstream.flow-controls``, one record
per flow (``FlowControl``, JSON), written by ``talkstream flows pause|resume`` and by a worker
whose breaker trips; every worker follows it (``streams.controlfollower``). A flow that is not
running is *held*: its changes are still read and decided (the link state keeps up), but
the link stage sends no write for it; each link that had something to write remembers it
(``held``), and when the flow runs again it gets one write with the latest agreed values.

The breaker counts, per flow and target system, the updates and deletes a worker sends to
records already linked, in a sliding window (``Breaker``). A write that would pass
``TALKSTREAM_BREAKER_MAX_WRITES`` within ``TALKSTREAM_BREAKER_WINDOW`` seconds trips the flow
instead (state ``tripped``, reason ``breaker``). Creates do not count: an initial load never
trips it. The count is each worker's own (the partitions it owns); the trip holds the flow on
every worker.
"""
from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from connectors.common.kafka import read_to_end

CONTROLS_TOPIC = read_to_end("talkstream.flow-controls")

RUNNING, PAUSED, TRIPPED = "running", "paused", "tripped"
State = Literal["running", "paused", "tripped"]


class FlowControl(BaseModel):
    """One flow's state, as the controls topic holds it (key: the flow id)."""

    model_config = ConfigDict(extra="ignore")

    schema_: Literal["talkstream.flow-control/v1"] = Field("talkstream.flow-control/v1", alias="schema")
    flow: str
    state: State = RUNNING
    reason: str | None = None  # "paused by an operator", "breaker"
    detail: dict = Field(default_factory=dict)  # breaker: system, count, window
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_bytes(cls, raw: bytes) -> "FlowControl":
        return cls.model_validate_json(raw)

    def describe(self) -> str:
        """Why the flow is in this state, in one line."""
        if self.state == RUNNING:
            return "running"
        if self.reason == "breaker" and self.detail:
            d = self.detail
            return (f"{self.state}: breaker, {d.get('count')} updates and deletes to {d.get('system')} would "
                    f"pass {d.get('max')} within {d.get('window'):g} s")
        return f"{self.state}: {self.reason or 'no reason given'}"


def pause(flow: str, reason: str = "paused by an operator") -> FlowControl:
    return FlowControl(flow=flow, state=PAUSED, reason=reason)


def resume(flow: str) -> FlowControl:
    return FlowControl(flow=flow, state=RUNNING, reason="resumed by an operator")


def tripped(flow: str, system: str, count: int, max_writes: int, window: float) -> FlowControl:
    return FlowControl(flow=flow, state=TRIPPED, reason="breaker",
                       detail={"system": system, "count": count, "max": max_writes, "window": window})


#: The writes the breaker counts: to records already linked.
COUNTED_OPS = frozenset({"update", "delete"})


class Breaker:
    """Updates and deletes per (flow, system) in a sliding window of ``window`` seconds; at most
    ``max_writes`` of them (0: no limit)."""

    def __init__(self, max_writes: int, window: float) -> None:
        self.max_writes = max_writes
        self.window = window
        self._sent: dict[tuple[str, str], deque[float]] = {}

    def count(self, flow: str, system: str, now: float | None = None) -> int:
        sent = self._sent.get((flow, system))
        if not sent:
            return 0
        now = time.monotonic() if now is None else now
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        return len(sent)

    def admits(self, flow: str, writes: dict[str, int], now: float) -> str | None:
        """None when ``writes`` ({system: counted writes}) fit the window; else the first
        system they would take past the limit."""
        if not self.max_writes:
            return None
        for system, n in writes.items():
            if n and self.count(flow, system, now) + n > self.max_writes:
                return system
        return None

    def note(self, flow: str, writes: dict[str, int], now: float) -> None:
        if not self.max_writes:
            return
        for system, n in writes.items():
            if n:
                self._sent.setdefault((flow, system), deque()).extend([now] * n)

    def reset(self, flow: str) -> None:
        """Restart the flow's window (on resume)."""
        for key in [key for key in self._sent if key[0] == flow]:
            del self._sent[key]


def counted_writes(commands) -> dict[str, int]:
    """{system: updates and deletes} among ``commands``."""
    counts: dict[str, int] = {}
    for command in commands:
        if command.op in COUNTED_OPS:
            counts[command.system] = counts.get(command.system, 0) + 1
    return counts
