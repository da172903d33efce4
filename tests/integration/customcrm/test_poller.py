"""Poller against the real sandbox and the embedded broker: every version exactly once, in order."""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import httpx
import pytest

from connectors.common.kafka import KafkaPublisher, ensure_topics, make_producer, read_all
from connectors.common.watermarks import WatermarkStore
from connectors.customcrm.client import CustomcrmClient
from connectors.customcrm.poller import CustomcrmPoller
from schemas.change import ChangeEvent
from schemas.deadletter import DeadLetter
from tests.integration.customcrm.conftest import TOKEN
from tests.support import async_wait_until

pytestmark = pytest.mark.integration


class TopicDeadLetters:
    """Dead letters to a (per-test) topic through the real producer, acknowledged."""

    def __init__(self, producer, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def publish(self, entry: DeadLetter) -> None:
        fut = await self.producer.send(self.topic, entry.to_bytes(), key=(entry.record_id or "").encode())
        await fut


@pytest.fixture
async def kafka(broker, unique):
    """A started producer, a unique change topic, watermark topic and dead-letter topic."""
    topics = {
        "changes": f"customcrm.order.changes.t{unique}",
        "watermark_topic": f"talkstream.watermarks.t{unique}",
        "deadletters": f"talkstream.deadletters.t{unique}",
    }
    await ensure_topics(broker.bootstrap, [topics["changes"], topics["deadletters"]])
    producer = make_producer(broker.bootstrap, single_record_batches=True)
    await producer.start()
    try:
        store = WatermarkStore(broker.bootstrap, producer, topic=topics["watermark_topic"])
        yield {"producer": producer, "publisher": KafkaPublisher(producer), "watermarks": store, **topics}
    finally:
        await producer.stop()


async def events_of(bootstrap: str, topic: str) -> list[ChangeEvent]:
    return [ChangeEvent.from_bytes(v) for _p, _o, _k, v in await read_all(bootstrap, topic)]


async def all_records(http: httpx.AsyncClient, resource: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    params: dict = {"limit": 1000}
    while True:
        page = (await http.get(f"/api/v1/{resource}", params=params)).json()
        out.update({r["Id"]: r for r in page["items"]})
        if not page["next_cursor"]:
            return out
        params = {"limit": 1000, "cursor": page["next_cursor"]}


async def test_every_version_exactly_once_across_a_restart(start_sandbox, kafka, broker):
    server = start_sandbox(seed=2000, rate_limit=None)
    rnd = random.Random(7)

    def new_poller(client) -> CustomcrmPoller:
        return CustomcrmPoller(client, kafka["publisher"], kafka["watermarks"], "order", page_size=50,
                               topic=kafka["changes"], dead_letters=TopicDeadLetters(kafka["producer"],
                                                                                     kafka["deadletters"]))

    stop = asyncio.Event()
    polls = {"a": 0, "b": 0}

    async def run(poller: CustomcrmPoller, name: str, until: asyncio.Event) -> None:
        while not until.is_set():
            await poller.poll_once()
            polls[name] += 1

    async with CustomcrmClient(server.url, TOKEN, rate_limit=None) as client, \
            httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        order_ids = sorted(await all_records(http, "orders"))
        assert len(order_ids) == 2000
        to_delete = rnd.sample(order_ids, 50)
        editable = [i for i in order_ids if i not in set(to_delete)]
        ops = [("patch", rnd.choice(editable[:400])) for _ in range(300)] + [("delete", i) for i in to_delete]
        rnd.shuffle(ops)

        first = new_poller(client)
        stop_first = asyncio.Event()
        task = asyncio.create_task(run(first, "a", stop_first))
        second_task = None
        for n, (kind, oid) in enumerate(ops):
            if kind == "patch":
                r = await http.patch(f"/api/v1/orders/{oid}", json={"Name": f"edit {n}", "YourReference": f"r{n}"})
                assert r.status_code == 200, r.text
            else:
                assert (await http.delete(f"/api/v1/orders/{oid}")).status_code == 204
            if n == len(ops) // 2:
                # restart: stop the first poller between two polls, start a new object that
                # loads its watermark from Kafka
                async def first_polled_a_few_times() -> bool:
                    return polls["a"] >= 3

                await async_wait_until(first_polled_a_few_times, timeout=30)
                stop_first.set()
                await task
                second = new_poller(client)
                second_task = asyncio.create_task(run(second, "b", stop))
            await asyncio.sleep(0.002)  # let the pollers interleave with the edits
        stop.set()
        await second_task
        # catch up to the end of the feed (a poll that publishes nothing)
        for _ in range(10):
            if await second.poll_once() == 0:
                break
        else:
            pytest.fail("the poller keeps publishing: it never reaches the end of the feed")
        final = await all_records(http, "orders")

    assert polls["a"] >= 3 and polls["b"] >= 1, polls
    events = await events_of(broker.bootstrap, kafka["changes"])
    seen = [(e.id, e.version) for e in events]
    assert len(seen) == len(set(seen)), "a record version was published twice"
    per_key: dict[str, list[int]] = defaultdict(list)
    for e in events:
        per_key[e.id].append(int(e.version))
        assert e.system == "customcrm" and e.entity == "order" and e.origin == "poll"
        assert e.op == ("delete" if e.data["Deleted"] else "upsert")
        assert e.modified_at is not None and e.data["ModifiedAt"].startswith(e.modified_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert all(v == sorted(v) for v in per_key.values()), "versions of a key out of order"
    latest = {e.id: e for e in events}
    assert set(latest) == set(final)
    assert all(latest[i].data == final[i] for i in final), "the topic's latest version differs from the source"
    assert sum(1 for e in latest.values() if e.op == "delete") == 50
    # edits while polling produced intermediate versions too, not only the final ones
    assert len(events) > 2000 + 50
    # nothing was dead-lettered, and the durable watermark is the feed's end
    assert await read_all(broker.bootstrap, kafka["deadletters"]) == []
    wm = await kafka["watermarks"].load("customcrm.order")
    assert wm["marks"] == {"orders": max(r["ModifiedAt"] for r in final.values())}


async def test_invalid_record_is_dead_lettered_and_reset_rereads(start_sandbox, kafka, broker):
    server = start_sandbox(seed=30, rate_limit=None)
    store = server.app.state.sandbox.store
    # the CRM returns a record that breaks the contract (bad Price): simulate it in the store
    with store.lock:
        coll = store.collections["products"]
        bad = dict(coll.records["prd_000003"], Price="cheap")
        coll.records["prd_000003"] = bad
    dlq = TopicDeadLetters(kafka["producer"], kafka["deadletters"])
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None) as client:
        poller = CustomcrmPoller(client, kafka["publisher"], kafka["watermarks"], "product", page_size=7,
                                 topic=kafka["changes"], dead_letters=dlq)
        assert await poller.poll_once() == 29
        assert await poller.poll_once() == 0  # nothing new, nothing re-published, not dead-lettered again
        letters = [DeadLetter.from_bytes(v) for *_, v in await read_all(broker.bootstrap, kafka["deadletters"])]
        assert len(letters) == 1
        assert letters[0].stage == "poll" and letters[0].record_id == "prd_000003"
        assert "Price" in letters[0].reason and letters[0].payload["Price"] == "cheap"
        # a fresh poller object continues from the watermark in Kafka
        again = CustomcrmPoller(client, kafka["publisher"], kafka["watermarks"], "product", page_size=7,
                                topic=kafka["changes"], dead_letters=dlq)
        assert await again.poll_once() == 0
        await again.reset()
        assert await kafka["watermarks"].load("customcrm.product") is None
        assert await again.poll_once() == 29
    events = await events_of(broker.bootstrap, kafka["changes"])
    assert len(events) == 58 and "prd_000003" not in {e.id for e in events}
