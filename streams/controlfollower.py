"""Every worker's view of the flow controls: follows ``talkstream.flow-controls`` into memory.

``held()`` is the set of flows that send no write now (paused or tripped); a worker's own
write (a breaker trip) is visible here at once. ``on_change`` is called with a flow's new
``FlowControl`` whenever its state changes (the worker then resets the breaker's window on
resume and wakes the links that held back a write).
"""
from __future__ import annotations

import logging
from typing import Callable

from streams.controls import CONTROLS_TOPIC, RUNNING, FlowControl
from streams.follower import TopicFollower

log = logging.getLogger(__name__)


class FlowControls(TopicFollower):
    what = "flow controls"

    def __init__(self, bootstrap: str, topic: str = CONTROLS_TOPIC,
                 on_change: Callable[[FlowControl], None] | None = None, **kwargs) -> None:
        super().__init__(bootstrap, topic, **kwargs)
        self.flows: dict[str, FlowControl] = {}
        self.on_change = on_change

    def state(self, flow: str) -> FlowControl:
        return self.flows.get(flow) or FlowControl(flow=flow)

    def held(self) -> frozenset[str]:
        return frozenset(flow for flow, control in self.flows.items() if control.state != RUNNING)

    def set(self, control: FlowControl) -> bool:
        """Take a flow's new state (followed, or this worker's own); True when it changed."""
        old = self.flows.get(control.flow)
        if old is not None and (old.state, old.at) == (control.state, control.at):
            return False
        self.flows[control.flow] = control
        if (old.state if old else RUNNING) != control.state:
            log.info("flow %s: %s", control.flow, control.describe())
            if self.on_change is not None:
                self.on_change(control)
        return True

    def apply(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.set(FlowControl(flow=key.decode()))
            return
        try:
            self.set(FlowControl.from_bytes(value))
        except ValueError as exc:  # a foreign record: the flow keeps its state
            log.warning("flow controls: unreadable record for %s ignored: %s", key.decode(errors="replace"), exc)
