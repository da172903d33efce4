"""The link stage in-process, driven through Faust's agent test context (no broker).

An app of the test's own gets the pipeline's topics and tables (``streams.stages.context.build``)
and the link stage (``streams.stages.link.register``); the stage's outputs keep what it sends.
A new order -> one create command, a decision record and a pending link in the ``links``
table; the create's result -> the link is linked, with no further write; the same change
read again -> nothing sent (at-least-once delivery is harmless).
"""
from __future__ import annotations

import uuid
from datetime import timedelta

import faust
import orjson
import pytest

from schemas.command import WriteCommand, command_members
from streams import engine, flowmessages
from streams.mapping import load_mapping
from streams.settings import Settings
from streams.stages import context as pipeline, link
from streams.topics import entities
from tests.unit.test_engine import T0, bnxt_order, crm_order, ok

KEY = "order-order:ord_1"


class Kept:
    """A stage output (anything with ``send``) that keeps what the stage sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, key: bytes | None = None, value: bytes | None = None) -> None:
        self.sent.append((key, value))


def stage_context(name: str, **settings) -> pipeline.Context:
    """The pipeline's topics, tables and services on a Faust app of the test's own, every output kept;
    the order's product linked."""
    settings = Settings(kafka_broker="kafka://127.0.0.1:9", store="memory://", partitions=4, **settings)
    mapping = load_mapping()
    app = faust.App(f"{name}-{uuid.uuid4().hex[:6]}", broker=settings.broker_url(), store="memory://",
                    autodiscover=False)
    outputs = pipeline.Outputs(flow_events=Kept(), commands={pair: Kept() for pair in entities(mapping)},
                               deadletters=Kept(), decisions=Kept(), stats=Kept(), refs=Kept(), controls=Kept())
    context = pipeline.build(app, settings, mapping, outputs=outputs)
    context.product_refs.put("prd_1", "SKU-1")
    return context


@pytest.fixture
def stage():
    context = stage_context("link-stage")
    context.flow_controls.loaded.set()  # no flow control on record: every flow runs
    return context, link.register(context)


def commands(context, system: str, entity: str) -> list[WriteCommand]:
    return [WriteCommand.model_validate(member) for _key, value in context.out.commands[(system, entity)].sent
            for member in command_members(value)]


async def test_a_change_creates_its_target_and_the_result_links_it(stage):
    context, stage = stage
    partition = context.partition_of(KEY)
    change = crm_order()
    async with stage.agent.test_context() as agent:
        await agent.put(key=KEY.encode(), partition=partition,
                        value=flowmessages.encode("change", "order-order", event=orjson.loads(change.to_bytes())))
        [create] = commands(context, "businessnxt", "order")
        assert create.op == "create" and create.link_key == KEY and create.idempotency_key == "customcrm:order:ord_1"
        assert stage.get(KEY)["status"] == engine.PENDING
        [(key, record)] = context.out.decisions.sent
        assert key == KEY.encode() and "create" in orjson.loads(record)["outcome"]
        assert context.flow_counts.events["order-order"] == 1

        acked = T0 + timedelta(seconds=1)
        result = ok(create, version=acked.isoformat(), record=bnxt_order(acked).data, target_id="5001")
        await agent.put(key=KEY.encode(), partition=partition,
                        value=flowmessages.encode("result", "order-order", result=orjson.loads(result.to_bytes())))
        state = stage.get(KEY)
        assert state["status"] == engine.LINKED and state["ids"] == {"customcrm": "ord_1", "businessnxt": "5001"}
        assert len(commands(context, "businessnxt", "order")) == 1  # no further write

        # the same change read again (at-least-once delivery): nothing is sent, nothing changes
        await agent.put(key=KEY.encode(), partition=partition,
                        value=flowmessages.encode("change", "order-order", event=orjson.loads(change.to_bytes())))
        assert len(commands(context, "businessnxt", "order")) == 1
        assert stage.get(KEY) == state
    assert context.out.deadletters.sent == []
    assert stage.summary_counts[("order-order", engine.LINKED, False, False)] == 1


async def test_an_unreadable_message_is_dead_lettered_and_the_stage_goes_on(stage):
    context, stage = stage
    async with stage.agent.test_context() as agent:
        await agent.put(key=KEY.encode(), value=b"{not json", partition=context.partition_of(KEY))
        await agent.put(key=KEY.encode(), partition=context.partition_of(KEY),
                        value=flowmessages.encode("change", "order-order",
                                                  event=orjson.loads(crm_order().to_bytes())))
    [(key, entry)] = context.out.deadletters.sent
    assert key == KEY.encode() and "unreadable flow message" in orjson.loads(entry)["reason"]
    assert len(commands(context, "businessnxt", "order")) == 1
