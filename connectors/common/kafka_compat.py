"""Compatibility fixes between aiokafka and the embedded broker (Tansu).

Tansu numbers a consumer group's first generation 0, but aiokafka only sends
LeaveGroup when ``generation > 0``. A worker stopped cleanly in its first
generation therefore stayed in the group as a ghost until its session timed
out, and the next worker's join waited for it (measured: ready in 19.5 s
instead of 6.5 s). ``apply()`` makes aiokafka leave whenever it holds a valid
generation (``>= 0``; -1 means "none"), which is what the Kafka protocol says.
Idempotent; harmless on Apache Kafka, whose generations start at 1.
"""
from __future__ import annotations

import logging

from aiokafka.consumer import group_coordinator as gc
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)

_applied = False


async def _maybe_leave_group(self) -> None:
    if self.generation >= 0 and self._group_instance_id is None and self.member_id:
        request = LeaveGroupRequest(self.group_id, self.member_id)
        try:
            await self._send_req(request)
        except gc.Errors.KafkaError as err:
            log.error("LeaveGroup request failed: %s", err)
        else:
            log.info("LeaveGroup request succeeded")
    self.reset_generation()


def apply() -> None:
    global _applied
    if _applied:
        return
    gc.GroupCoordinator._maybe_leave_group = _maybe_leave_group
    _applied = True
