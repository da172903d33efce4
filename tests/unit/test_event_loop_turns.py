"""Two per-message costs of Faust that ``connectors.common.patches.speed`` removes, on
stand-ins for Faust's classes: a send no longer yields to the event loop to get the
producer, and a consumed message is delivered to its streams without four tasks when the
delivery need not wait. The rebalance and stop paths (a delivery that waits while the flow
is suspended) keep Faust's behaviour; ``tests/chaos`` runs them with real workers.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.topics import Topic
from mode import Service
from mode.utils.locks import Event

from connectors.common import patches
from connectors.common.patches import speed


def run_without_yielding(coro):
    """The coroutine's result if it finishes without yielding to the event loop once."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the coroutine yielded to the event loop")


# --------------------------------------------------------------------------- the producer


def test_a_started_producer_is_returned_without_a_turn_of_the_event_loop():
    patches.apply()
    producer = SimpleNamespace(started=True)
    topic = SimpleNamespace(app=SimpleNamespace(in_transaction=False, producer=producer))
    assert run_without_yielding(Topic._get_producer(topic)) is producer


async def test_a_producer_not_started_yet_is_started_as_faust_does():
    patches.apply()
    started = SimpleNamespace(started=True)

    async def maybe_start_producer():
        await asyncio.sleep(0)
        return started

    app = SimpleNamespace(in_transaction=False, producer=SimpleNamespace(started=False),
                          maybe_start_producer=maybe_start_producer)
    assert await Topic._get_producer(SimpleNamespace(app=app)) is started


# --------------------------------------------------------------------------- the delivery


class Consumer(Service):
    """What ``wait_first`` of Faust's consumer uses: mode's own, and the flow suspension."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


speed._patch_delivery_wait(Consumer)


def loop_turns() -> tuple[list[int], asyncio.Task]:
    """A task counting the event loop's turns."""
    turns = [0]

    async def tick():
        while True:
            await asyncio.sleep(0)
            turns[0] += 1
    return turns, asyncio.ensure_future(tick())


async def test_a_delivery_that_need_not_wait_runs_at_once_without_tasks():
    consumer = Consumer()
    delivered = []

    async def deliver(message):
        delivered.append(message)
        return "done"

    suspended = consumer.suspend_flow.wait()
    turns, ticker = loop_turns()
    try:
        tasks_before = len(asyncio.all_tasks())
        result = run_without_yielding(consumer.wait_first(deliver("m1"), suspended))
        assert len(asyncio.all_tasks()) == tasks_before
    finally:
        ticker.cancel()
    assert delivered == ["m1"] and turns == [0]
    assert result.results == ["done"] and not result.stopped
    assert suspended.cr_frame is None  # closed, never started: no "never awaited" warning


async def test_a_delivery_that_waits_goes_on_until_it_is_done():
    consumer = Consumer()
    gate = asyncio.get_running_loop().create_future()
    steps = []

    async def deliver():
        steps.append("started")
        await asyncio.sleep(0)  # a bare yield
        steps.append(await gate)  # a future
        return "delivered"

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["started"] and not waiting.done()
    gate.set_result("opened")
    result = await asyncio.wait_for(waiting, 5)
    assert steps == ["started", "opened"]
    assert result.results == ["delivered"] and not result.stopped


async def test_a_waiting_delivery_is_cancelled_where_it_waits_when_the_flow_is_suspended():
    consumer = Consumer()
    gate = asyncio.get_running_loop().create_future()
    seen = []

    async def deliver():
        try:
            await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    waiting = asyncio.ensure_future(consumer.wait_first(deliver(), consumer.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    consumer.suspend_flow.set()  # a rebalance: Faust's consumer stops delivering
    result = await asyncio.wait_for(waiting, 5)
    await asyncio.sleep(0.01)  # the cancelled delivery task finishes
    assert result.results == [True]  # the suspension won, as before
    assert seen == ["cancelled"] and gate.cancelled()


async def test_with_the_flow_suspended_the_delivery_takes_faust_s_own_way():
    consumer = Consumer()
    consumer.suspend_flow.set()
    delivered = []

    async def deliver():
        delivered.append("m1")

    tasks_before = len(asyncio.all_tasks())
    waiting = consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    waiting.send(None)  # mode's wait_first: it made its tasks and waits for them
    assert delivered == []  # not run in the consumer's own task
    assert len(asyncio.all_tasks()) == tasks_before + 4  # delivery, suspension, stopped, crashed
    waiting.close()  # mode cancels what it started
    await asyncio.sleep(0.01)
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_failing_delivery_raises_to_the_consumer():
    consumer = Consumer()

    async def deliver():
        raise ValueError("undecodable")

    suspended = consumer.suspend_flow.wait()
    with pytest.raises(ValueError, match="undecodable"):
        await consumer.wait_first(deliver(), suspended)
    assert suspended.cr_frame is None
