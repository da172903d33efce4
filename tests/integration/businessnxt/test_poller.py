"""Poller on the embedded broker and a real sandbox: 2,000 seeded rows (some
legacy rows with null timestamps), 300 edits, 20 deletes (via webhooks), a
restart mid-run -> every version exactly once per key, in order, nothing missed."""
from __future__ import annotations

import pytest

from connectors.businessnxt.client import flatten_order
from connectors.businessnxt.poller import BusinessnxtPoller
from connectors.businessnxt.records import record_version
from connectors.common.httpserver import free_port
from connectors.common.kafka import KafkaPublisher, ensure_topics, read_all
from connectors.common.watermarks import WatermarkStore
from schemas.change import ChangeEvent
from tests.support import async_wait_until

from .conftest import closing, receiver_app

pytestmark = pytest.mark.integration

KEY = "poller-test-key"


def snapshot(sb) -> dict[tuple[str, str], str | None]:
    """Current version of every record, read straight from the sandbox store."""
    store = sb.state.store
    out: dict[tuple[str, str], str | None] = {}
    with store.lock:
        for no, row in store.rows["order"].items():
            rec = dict(row, orderLines=list(store.lines_by_order.get(no, {}).values()))
            out[("order", str(no))] = record_version(rec, sb.state.timezone)
        for no, row in store.rows["product"].items():
            out[("product", no)] = record_version(row, sb.state.timezone)
    return out


def edit_round(sb, token: str, r: int) -> int:
    """150 edits: products (batched + single), order heads (batched + single), order lines."""
    n = 0
    prods = [f"P{i:05d}" for i in range(1 + r, 1000, 40)][:25]  # 25 in one call: equal timestamps
    sb.gql("mutation($f: [FilterExpression_Product!], $v: [Product_Input!]) { useCompany(no: 1) { "
           "product_update(filters: $f, values: $v) { affectedRows } } }",
           {"f": [{"productNo": {"_eq": p}} for p in prods], "v": [{"description": f"r{r} {p}"} for p in prods]},
           token=token)
    n += len(prods)
    for i in range(25):
        p = f"P{(i * 37 + r * 11) % 1000 + 1:05d}"
        sb.gql("mutation($p: String, $d: String) { useCompany(no: 1) { product_update(filter: {productNo: {_eq: $p}}, "
               "value: {webPage: $d}) { affectedRows } } }", {"p": p, "d": f"https://x/{r}/{i}"}, token=token)
        n += 1
    heads = list(range(3 + r, 1000, 39))[:25]
    sb.gql("mutation($f: FilterExpression_Order) { useCompany(no: 1) { order_update(filter: $f, "
           "value: {yourReference: \"bulk\"}) { affectedRows } } }", {"f": {"orderNo": {"_in": heads}}}, token=token)
    n += len(heads)
    for i in range(25):
        o = (i * 53 + r * 7) % 1000 + 1
        sb.gql("mutation($o: Int, $n: String) { useCompany(no: 1) { order_update(filter: {orderNo: {_eq: $o}}, "
               "value: {name: $n}) { affectedRows } } }", {"o": o, "n": f"r{r}-{i}"}, token=token)
        n += 1
    lines = [((i * 71 + r * 13) % 1000 + 1) for i in range(50)]
    sb.gql("mutation($f: [FilterExpression_OrderLine!], $v: [OrderLine_Input!]) { useCompany(no: 1) { "
           "orderLine_update(filters: $f, values: $v) { affectedRows } } }",
           {"f": [{"_and": [{"orderNo": {"_eq": o}}, {"lineNo": {"_eq": 1}}]} for o in lines],
            "v": [{"quantity": 100 + r * 50 + i} for i in range(50)]}, token=token)
    n += len(lines)
    return n


async def test_poll_edits_deletes_restart(broker, unique, sandbox_factory, server_factory, producer):
    topics = {"order": f"bnxt.order.{unique}", "product": f"bnxt.product.{unique}"}
    wm_topic = f"talkstream.watermarks.{unique}"
    await ensure_topics(broker.bootstrap, list(topics.values()))
    port = free_port()
    sb = sandbox_factory(seed=1000, webhook_url=f"http://127.0.0.1:{port}/webhook", webhook_key=KEY)
    server_factory(receiver_app(broker.bootstrap, sb, KEY, topics=topics, upserts=False), port=port)
    legacy = sum(1 for v in snapshot(sb).values() if v is None)
    assert legacy > 20  # the seed has legacy rows with null timestamps

    publisher = KafkaPublisher(producer)
    expected: dict[tuple[str, str], list[str | None]] = {}

    def record_expected() -> None:
        for key, version in snapshot(sb).items():
            seq = expected.setdefault(key, [])
            if not seq or seq[-1] != version:
                seq.append(version)

    def make_pollers(client):
        wms = WatermarkStore(broker.bootstrap, producer, topic=wm_topic)
        return {e: BusinessnxtPoller(client, publisher, wms, e, page_size=200, topic=topics[e],
                                     timezone=sb.state.timezone) for e in ("order", "product")}

    async def poll_all(pollers) -> int:
        record_expected()
        return sum([await p.poll_once() for p in pollers.values()])

    token = sb.token()
    edits = 0
    async with closing(sb.client()) as client:
        pollers = make_pollers(client)
        assert await poll_all(pollers) == 2000
        assert await poll_all(pollers) == 0  # nothing changed: nothing re-published
        edits += edit_round(sb, token, 0)
        assert await poll_all(pollers) > 0
        edits += edit_round(sb, token, 1)
        await poll_all(pollers)

    # restart: new client, new watermark store, state loaded from Kafka only
    async with closing(sb.client()) as client:
        pollers = make_pollers(client)
        assert await poll_all(pollers) == 0
        edits += edit_round(sb, token, 2)
        await poll_all(pollers)
        edits += edit_round(sb, token, 3)
        deleted_orders = [11, 222, 333, 444, 555, 666, 777, 888, 999, 1000]
        deleted_products = [f"P{i:05d}" for i in (7, 77, 177, 277, 377, 477, 577, 677, 777, 877)]
        sb.gql("mutation($o: [Int], $p: [String]) { useCompany(no: 1) { "
               "order_delete(filter: {orderNo: {_in: $o}}) { affectedRows } "
               "product_delete(filter: {productNo: {_in: $p}}) { affectedRows } } }",
               {"o": deleted_orders, "p": deleted_products}, token=token)
        await poll_all(pollers)
        assert await poll_all(pollers) == 0
        final = {}
        for e in ("order", "product"):
            for row in await client.read_all(e, page_size=1000):
                final[(e, str(row["orderNo"] if e == "order" else row["productNo"]))] = row
    assert edits == 600

    await async_wait_until(lambda: _webhooks_done(sb), timeout=20, message="webhook deliveries")

    events: dict[str, list[ChangeEvent]] = {}
    for e, topic in topics.items():
        events[e] = [ChangeEvent.from_bytes(v) for _p, _o, _k, v in await read_all(broker.bootstrap, topic)]

    polled: dict[tuple[str, str], list[ChangeEvent]] = {}
    for e, evs in events.items():
        for ev in evs:
            if ev.origin == "poll":
                polled.setdefault((e, ev.id), []).append(ev)
    # every version exactly once per key, in order, nothing missed
    assert set(polled) == set(expected)
    mismatched = {k: ([ev.version for ev in polled[k]], v) for k, v in expected.items()
                  if [ev.version for ev in polled[k]] != v}
    assert not mismatched, list(mismatched.items())[:5]
    assert sum(1 for k, v in expected.items() if len(v) > 1) > 250  # the edits were really observed
    # the last polled data is the stored row
    for key, row in final.items():
        last = polled[key][-1]
        assert last.data == (flatten_order(row) if key[0] == "order" else row)
    # legacy rows: published once without a version (unless edited since)
    assert sum(1 for evs in polled.values() if evs[0].version is None) == legacy
    # deletes: tombstones through the webhook
    tomb = {(e, ev.id) for e, evs in events.items() for ev in evs if ev.op == "delete"}
    assert tomb == {("order", str(o)) for o in deleted_orders} | {("product", p) for p in deleted_products}
    assert all(ev.data is None and ev.origin == "webhook" for evs in events.values() for ev in evs if ev.op == "delete")


async def _webhooks_done(sb) -> bool:
    w = sb.state.webhooks
    return w is not None and w.pending == 0 and w.delivered > 0
