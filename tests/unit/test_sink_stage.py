"""The sink stage in-process, driven through Faust's agent test context (no broker, no system).

A command's canonical values are encoded for its system once, just before the writer (here one
that keeps what it is given); a value the system cannot take becomes an ``invalid`` result and
reaches no writer; every result goes back to the flow topic, keyed by its link.
"""
from __future__ import annotations

import pytest

from schemas.command import WriteResult
from streams import flowmessages
from streams.stages import sink
from tests.unit.edge import handle_change
from tests.unit.test_engine import ORDER, POLICY, REFS, crm_order
from tests.unit.test_link_stage import stage_context

KEY = "order-order:ord_1"


class KeptWriter:
    """A writer that keeps the commands it is given and answers each ``ok``."""

    def __init__(self) -> None:
        self.applied = []

    async def apply(self, commands):
        self.applied.extend(commands)
        return [WriteResult(command_id=c.command_id, flow=c.flow, link_key=c.link_key, system=c.system,
                            entity=c.entity, op=c.op, status="ok", target_id="5001") for c in commands]


@pytest.fixture
def stage():
    context = stage_context("sink-stage", sink_batch_wait=0.01)
    writer = KeptWriter()
    context.runtime.writers = {"customcrm": writer, "businessnxt": writer}
    context.runtime.ready.set()
    return context, sink.register(context)[("businessnxt", "order")], writer


def results(context) -> list[dict]:
    return [member["result"] for key, value in context.out.flow_events.sent
            for _link, member in flowmessages.unpack(key, value)]


async def test_the_sink_encodes_each_command_once_and_sends_its_result_back(stage):
    context, agent, writer = stage
    (create,) = handle_change(None, ORDER, crm_order(), KEY, now=0, refs=REFS, policy=POLICY).commands
    async with agent.test_context() as sink_agent:
        await sink_agent.put(key=KEY.encode(), value=create.to_bytes(), partition=context.partition_of(KEY))
    [applied] = writer.applied
    assert applied.values is None and applied.data["orderDate"] == 20261120
    assert applied.data["orderLines"][0]["productNo"] == "SKU-1"
    assert [(r["link_key"], r["status"], r["target_id"]) for r in results(context)] == [(KEY, "ok", "5001")]


async def test_a_value_the_system_cannot_take_reaches_no_writer(stage):
    context, agent, writer = stage
    (create,) = handle_change(None, ORDER, crm_order(Discount="12345678901234567890.25"), KEY, now=0, refs=REFS,
                              policy=POLICY).commands
    async with agent.test_context() as sink_agent:
        await sink_agent.put(key=KEY.encode(), value=create.to_bytes(), partition=context.partition_of(KEY))
    assert writer.applied == []
    [result] = results(context)
    assert result["status"] == "invalid" and "Discount" in result["error"]
