"""Webhooks end to end: sandbox -> signed POST -> WebhookReceiver (real HTTP
server) -> fetch by key -> change topic on the embedded broker."""
from __future__ import annotations

import logging
import time

import httpx
import orjson
import pytest

from connectors.businessnxt.webhook import SIGNATURE_HEADER, compute_signature
from connectors.common.httpserver import free_port
from connectors.common.kafka import ensure_topics

from .conftest import receiver_app
from .kafka_watch import TopicWatcher

pytestmark = pytest.mark.integration

KEY = "whsec-test-key-123"


@pytest.fixture
async def setup(broker, unique, sandbox_factory, server_factory):
    topics = {"order": f"bnxt.order.{unique}", "product": f"bnxt.product.{unique}"}
    await ensure_topics(broker.bootstrap, list(topics.values()))
    port = free_port()
    sb = sandbox_factory(seed=10, webhook_url=f"http://127.0.0.1:{port}/webhook", webhook_key=KEY)
    srv = server_factory(receiver_app(broker.bootstrap, sb, KEY, topics=topics), port=port)
    return sb, srv, topics


async def test_change_in_erp_reaches_topic_within_a_second(broker, setup):
    sb, _srv, topics = setup
    async with TopicWatcher(broker.bootstrap, topics["product"]) as products, \
            TopicWatcher(broker.bootstrap, topics["order"]) as orders:
        t0 = time.monotonic()
        sb.gql('mutation { useCompany(no: 1) { product_update(filter: {productNo: {_eq: "P00004"}}, '
               'value: {description: "edited in ERP"}) { affectedRows } } }')
        ev = await products.wait_for(lambda e: e.id == "P00004", timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        assert ev.origin == "webhook" and ev.op == "upsert"
        assert ev.data["description"] == "edited in ERP"
        assert ev.version and ev.version.endswith("Z") and ev.modified_at is not None

        # a change to an order line publishes its order, with the lines
        sb.gql("mutation { useCompany(no: 1) { orderLine_update(filter: {_and: [{orderNo: {_eq: 3}}, "
               "{lineNo: {_eq: 1}}]}, value: {quantity: 42}) { affectedRows } } }")
        ev = await orders.wait_for(lambda e: e.id == "3", timeout=1.0)
        assert ev.data["orderLines"][0]["quantity"] == 42
        assert ev.version == max(ev.version, "")  # a UTC version string

        # deletes publish tombstones
        sb.gql("mutation { useCompany(no: 1) { order_delete(filter: {orderNo: {_eq: 5}}) { affectedRows } } }")
        ev = await orders.wait_for(lambda e: e.id == "5" and e.op == "delete", timeout=2.0)
        assert ev.data is None and ev.version.endswith("Z")
        # duplicate delivery: the same version again, harmless
        body = orjson.dumps({"tableIdentifier": "product", "customerNo": 0, "companyNo": 1, "event": "UPDATE",
                             "primaryKeys": [{"productNo": "P00004"}], "timestamp": "2026-11-25T10:00:00Z"})
        r = httpx.post(_srv.url + "/webhook", content=body, headers={SIGNATURE_HEADER: compute_signature(body, KEY)})
        assert r.status_code == 200
        def republished(_event) -> bool:
            return sum(e.id == "P00004" for e in products.events) >= 2
        await products.wait_for(republished, timeout=10.0)  # the duplicate's event, however slow the fetch
        versions = [e.version for e in products.events if e.id == "P00004"]
        assert len(versions) >= 2 and len(set(versions)) == 1


async def test_forged_or_missing_signature_is_rejected(broker, setup, caplog):
    sb, srv, topics = setup
    caplog.set_level(logging.WARNING)
    body = orjson.dumps({"tableIdentifier": "product", "customerNo": 0, "companyNo": 1, "event": "UPDATE",
                         "primaryKeys": [{"productNo": "P00001"}], "timestamp": "2026-11-25T10:00:00Z"})
    forged = compute_signature(body, "not-the-key")
    r1 = httpx.post(srv.url + "/webhook", content=body, headers={SIGNATURE_HEADER: forged})
    r2 = httpx.post(srv.url + "/webhook", content=body)
    tampered = body.replace(b"P00001", b"P00002")
    r3 = httpx.post(srv.url + "/webhook", content=tampered, headers={SIGNATURE_HEADER: compute_signature(body, KEY)})
    assert (r1.status_code, r2.status_code, r3.status_code) == (401, 401, 401)
    # barrier: a valid delivery afterwards is published; the rejected ones never were
    ok = orjson.dumps({"tableIdentifier": "product", "customerNo": 0, "companyNo": 1, "event": "UPDATE",
                       "primaryKeys": [{"productNo": "P00003"}], "timestamp": "2026-11-25T10:00:00Z"})
    r = httpx.post(srv.url + "/webhook", content=ok, headers={SIGNATURE_HEADER: compute_signature(ok, KEY)})
    assert r.status_code == 200 and r.json() == {"published": 1}
    async with TopicWatcher(broker.bootstrap, topics["product"]) as products:
        await products.wait_for(lambda e: e.id == "P00003")
        assert {e.id for e in products.events} == {"P00003"}
    warnings = [r for r in caplog.records if "webhook rejected" in r.getMessage()]
    assert len(warnings) == 3 and all(r.levelno == logging.WARNING for r in warnings)
    assert not any(KEY in r.getMessage() for r in caplog.records)


async def test_line_delete_republishes_order_with_newer_version(broker, setup):
    sb, _srv, topics = setup
    async with TopicWatcher(broker.bootstrap, topics["order"]) as orders:
        sb.gql("mutation { useCompany(no: 1) { orderLine_update(filter: {orderNo: {_eq: 2}}, "
               "value: {description: \"x\"}) { affectedRows } } }")
        first = await orders.wait_for(lambda e: e.id == "2")
        d = sb.gql("mutation { useCompany(no: 1) { orderLine_create(values: [{orderNo: 2, productNo: \"P00001\", "
                   "quantity: 1}]) { items { lineNo } } } }")
        new_line = d["data"]["useCompany"]["orderLine_create"]["items"][0]["lineNo"]
        created = await orders.wait_for(lambda e: e.id == "2" and len(e.data["orderLines"]) ==
                                        len(first.data["orderLines"]) + 1)
        sb.gql("mutation($n: Int) { useCompany(no: 1) { orderLine_delete(filter: {_and: [{orderNo: {_eq: 2}}, "
               "{lineNo: {_eq: $n}}]}) { affectedRows } } }", {"n": new_line})
        after = await orders.wait_for(lambda e: e.id == "2" and e.version > created.version)
        assert [ln["lineNo"] for ln in after.data["orderLines"]] == [ln["lineNo"] for ln in first.data["orderLines"]]


def test_sandbox_webhooks_are_signed_retried_and_ordered_per_row(sandbox_factory, server_factory):
    """The sandbox's own sender: HMAC header, retries on non-2xx, commit order per row."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from connectors.businessnxt.webhook import verify_signature
    from tests.support import wait_until

    received: list[dict] = []
    attempts: dict[bytes, int] = {}

    async def hook(request):
        body = await request.body()
        assert verify_signature(body, request.headers.get(SIGNATURE_HEADER), KEY)
        attempts[body] = attempts.get(body, 0) + 1
        if attempts[body] < 3:  # fail twice, then accept
            return Response(status_code=503)
        received.append(orjson.loads(body))
        return Response(status_code=204)

    port = free_port()
    server_factory(Starlette(routes=[Route("/hook", hook, methods=["POST"])]), port=port)
    sb = sandbox_factory(seed=3, webhook_url=f"http://127.0.0.1:{port}/hook", webhook_key=KEY)
    token = sb.token()
    sb.state.execute('mutation { useCompany(no: 1) { product_update(filter: {productNo: {_eq: "P00001"}}, '
                     'value: {description: "from the test thread"}) { affectedRows } } }')
    for i in range(4):
        sb.gql('mutation($d: String) { useCompany(no: 1) { product_update(filter: {productNo: {_eq: "P00001"}}, '
               'value: {description: $d}) { affectedRows } } }', {"d": f"v{i}"}, token=token)
    sb.gql('mutation { useCompany(no: 1) { order_create(values: [{customerNo: 10000, orderLines: '
           '[{productNo: "P00002"}]}]) { affectedRows } } }', token=token)
    wait_until(lambda: len(received) == 7, timeout=20, message="7 deliveries")
    p1 = [e for e in received if e["tableIdentifier"] == "product"]
    assert [e["event"] for e in p1] == ["UPDATE"] * 5
    assert [e["timestamp"] for e in p1] == sorted(e["timestamp"] for e in p1)
    assert all(e["timestamp"].endswith("Z") and e["companyNo"] == 1 and e["customerNo"] == 0 for e in received)
    order = [(e["tableIdentifier"], e["event"], e["primaryKeys"]) for e in received if e["tableIdentifier"] != "product"]
    assert order == [("order", "INSERT", [{"orderNo": 4}]), ("orderLine", "INSERT", [{"orderNo": 4, "lineNo": 1}])]
    assert set(attempts.values()) == {3}
    assert sb.stats()["webhooks"]["failed_attempts"] == 14


async def test_unparseable_payload_is_dead_lettered(broker, unique, sandbox_factory, server_factory):
    from connectors.common.kafka import read_all
    from schemas.deadletter import DeadLetter
    from tests.support import async_wait_until

    topics = {"order": f"bnxt.order.dl.{unique}", "product": f"bnxt.product.dl.{unique}"}
    dl_topic = f"talkstream.deadletters.{unique}"
    await ensure_topics(broker.bootstrap, [*topics.values(), dl_topic])
    sb = sandbox_factory(seed=1)
    srv = server_factory(receiver_app(broker.bootstrap, sb, KEY, topics=topics, dead_letter_topic=dl_topic))
    body = b'{"tableIdentifier": "order", "primaryKeys": "not a list"'
    r = httpx.post(srv.url + "/webhook", content=body, headers={SIGNATURE_HEADER: compute_signature(body, KEY)})
    assert r.status_code == 400

    async def letters():
        return [DeadLetter.from_bytes(v) for *_x, v in await read_all(broker.bootstrap, dl_topic)]

    [dl] = await async_wait_until(letters, timeout=10)
    assert dl.stage == "webhook" and dl.error_type == "unparseable_payload" and dl.payload == body.decode()
