"""The Businessnxt sandbox against a standard GraphQL client (gql) and raw HTTP:
introspection, documented query / mutation shapes, every filter operator,
paging both ways, suggested keys, nested lines, batches, auth and limits."""
from __future__ import annotations

import asyncio

import httpx
import pytest
from gql import Client
from gql.graphql_request import GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport

pytestmark = pytest.mark.integration

ORDERS = """
query Orders($cid: Int!, $f: FilterExpression_Order, $first: Int, $after: String, $last: Int, $before: String,
             $skip: Int, $o: [OrderBy_Order]) {
  useCompany(no: $cid) {
    order(filter: $f, first: $first, after: $after, last: $last, before: $before, skip: $skip, orderBy: $o) {
      totalCount
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      items { orderNo customerNo name information1 orderDate changedTimestamp createdTimestamp
              joindown_OrderLine_via_Order { items { orderNo lineNo productNo quantity } } }
    }
  }
}"""


def gql_session(sb):
    token = sb.token()
    transport = HTTPXAsyncTransport(url=sb.url, headers={"authorization": f"Bearer {token}"})
    return Client(transport=transport, fetch_schema_from_transport=True)


async def run(session, query: str, **variables):
    return await session.execute(GraphQLRequest(query, variable_values=variables))


async def test_introspection_and_documented_shapes(sandbox):
    async with gql_session(sandbox) as session:
        schema = session.client.schema
        assert schema is not None
        assert {"Order", "OrderLine", "Product", "FilterExpression_Order", "Order_Input"} <= set(schema.type_map)
        assert "joindown_OrderLine_via_Order" in schema.type_map["Order"].fields
        data = await run(session, ORDERS, cid=1, first=5, o=[{"orderNo": "ASC"}])
        conn = data["useCompany"]["order"]
        assert conn["totalCount"] == 20
        assert [r["orderNo"] for r in conn["items"]] == [1, 2, 3, 4, 5]
        assert conn["pageInfo"]["hasNextPage"] is True and conn["pageInfo"]["hasPreviousPage"] is False
        assert all(1 <= len(r["joindown_OrderLine_via_Order"]["items"]) <= 5 for r in conn["items"])
        assert isinstance(conn["items"][0]["orderDate"], int) and conn["items"][0]["orderDate"] > 20250000
        # gql validates locally against the introspected schema: an unknown field never leaves the client
        with pytest.raises(Exception):
            await run(session, "query { useCompany(no: 1) { order { items { nope } } } }")


async def test_filter_operators(sandbox):
    async with gql_session(sandbox) as session:
        async def nos(f):
            d = await run(session, ORDERS, cid=1, f=f, o=[{"orderNo": "ASC"}])
            return [r["orderNo"] for r in d["useCompany"]["order"]["items"]]

        assert await nos({"orderNo": {"_eq": 3}}) == [3]
        assert await nos({"orderNo": {"_not_eq": 3}}) == [n for n in range(1, 21) if n != 3]
        assert await nos({"orderNo": {"_gt": 18}}) == [19, 20]
        assert await nos({"orderNo": {"_gte": 19}}) == [19, 20]
        assert await nos({"orderNo": {"_lt": 3}}) == [1, 2]
        assert await nos({"orderNo": {"_lte": 2}}) == [1, 2]
        assert await nos({"orderNo": {"_in": [5, 7, 99]}}) == [5, 7]
        assert await nos({"_and": [{"orderNo": {"_not_in": [1, 2]}}, {"orderNo": {"_lt": 5}}]}) == [3, 4]
        assert await nos({"orderNo": {"_between": {"from": 4, "to": 6}}}) == [4, 5, 6]
        assert await nos({"name": {"_like": "Order 1%"}}) == [1] + list(range(10, 20))
        assert await nos({"_or": [{"orderNo": {"_eq": 1}}, {"name": {"_like": "%20"}}]}) == [1, 20]
        # DateTime comparison with the server's own strings
        d = await run(session, ORDERS, cid=1, f={"orderNo": {"_eq": 10}})
        ts = d["useCompany"]["order"]["items"][0]["changedTimestamp"]
        if ts is not None:
            assert 10 in await nos({"changedTimestamp": {"_gte": ts}})
            assert 10 not in await nos({"changedTimestamp": {"_gt": ts}})


async def test_paging_forward_and_backward(sandbox):
    async with gql_session(sandbox) as session:
        order = [{"orderNo": "ASC"}]
        seen, after = [], None
        while True:
            d = (await run(session, ORDERS, cid=1, first=6, after=after, o=order))["useCompany"]["order"]
            seen += [r["orderNo"] for r in d["items"]]
            if not d["pageInfo"]["hasNextPage"]:
                break
            after = d["pageInfo"]["endCursor"]
        assert seen == list(range(1, 21))
        back, before = [], None
        while True:
            d = (await run(session, ORDERS, cid=1, last=6, before=before, o=order))["useCompany"]["order"]
            back = [r["orderNo"] for r in d["items"]] + back
            if not d["pageInfo"]["hasPreviousPage"]:
                break
            before = d["pageInfo"]["startCursor"]
        assert back == list(range(1, 21))
        d = (await run(session, ORDERS, cid=1, skip=5, first=2, o=[{"orderNo": "DESC"}]))["useCompany"]["order"]
        assert [r["orderNo"] for r in d["items"]] == [15, 14]
        with pytest.raises(TransportQueryError, match="positive"):
            await run(session, ORDERS, cid=1, first=0)


CREATE = """
mutation Create($cid: Int!, $v: [Order_Input!]!) {
  useCompany(no: $cid) { order_create(values: $v) { affectedRows
    items { orderNo customerNo information1 joindown_OrderLine_via_Order { items { lineNo productNo quantity } } } } }
}"""


async def test_mutations_suggested_keys_nested_lines_update_delete(sandbox):
    async with gql_session(sandbox) as session:
        d = await run(session, CREATE, cid=1, v=[
            {"customerNo": 10001, "name": "A", "information1": "o:1",
             "orderLines": [{"productNo": "P00001", "quantity": 2}, {"productNo": "P00002", "quantity": 1.5}]},
            {"orderNo": None, "customerNo": 10002, "name": "B"},
        ])
        res = d["useCompany"]["order_create"]
        assert res["affectedRows"] == 2
        a, b = res["items"]
        assert (a["orderNo"], b["orderNo"]) == (21, 22)  # suggested: next order numbers
        assert [(ln["lineNo"], ln["productNo"], ln["quantity"]) for ln in a["joindown_OrderLine_via_Order"]["items"]] \
            == [(1, "P00001", 2.0), (2, "P00002", 1.5)]
        # unknown customer: error in errors, nothing created
        with pytest.raises(TransportQueryError, match="customer 5 does not exist"):
            await run(session, CREATE, cid=1, v=[{"customerNo": 10003}, {"customerNo": 5}])
        cnt = await run(session, "query { useCompany(no: 1) { order { totalCount } } }")
        assert cnt["useCompany"]["order"]["totalCount"] == 22
        # update: one value for every matching row, and parallel filters/values
        upd = """mutation($f: FilterExpression_Order, $v: Order_Input, $fs: [FilterExpression_Order!], $vs: [Order_Input!]) {
          useCompany(no: 1) {
            one: order_update(filter: $f, value: $v) { affectedRows items { orderNo name } }
            many: order_update(filters: $fs, values: $vs) { affectedRows items { orderNo name } } } }"""
        d = await run(session, upd, f={"orderNo": {"_in": [21, 22]}}, v={"yourReference": "R"},
                      fs=[{"orderNo": {"_eq": 21}}, {"orderNo": {"_eq": 22}}], vs=[{"name": "A2"}, {"name": "B2"}])
        assert d["useCompany"]["one"]["affectedRows"] == 2
        assert [i["name"] for i in d["useCompany"]["many"]["items"]] == ["A2", "B2"]
        with pytest.raises(TransportQueryError, match="primary key"):
            await run(session, upd, f={"orderNo": {"_eq": 21}}, v={"orderNo": 99},
                      fs=[], vs=[])
        # line mutations and delete (items is null)
        d = await run(session, """mutation { useCompany(no: 1) {
            orderLine_create(values: [{orderNo: 22, productNo: "P00003", quantity: 4}]) { affectedRows items { lineNo } }
            orderLine_delete(filter: {_and: [{orderNo: {_eq: 21}}, {lineNo: {_eq: 2}}]}) { affectedRows items { lineNo } }
            order_delete(filter: {orderNo: {_eq: 20}}) { affectedRows items { orderNo } } } }""")
        assert d["useCompany"]["orderLine_create"]["items"] == [{"lineNo": 1}]
        assert d["useCompany"]["orderLine_delete"] == {"affectedRows": 1, "items": None}
        assert d["useCompany"]["order_delete"]["affectedRows"] == 1
        stats = sandbox.stats()
        assert stats["rows"]["order"] == 21


async def test_products_duplicate_key_and_unknown_company(sandbox):
    async with gql_session(sandbox) as session:
        q = """mutation($v: [Product_Input!]!) { useCompany(no: 1) {
               product_create(values: $v) { affectedRows items { productNo priceQuantity } } } }"""
        d = await run(session, q, v=[{"productNo": "NEW-1", "priceQuantity": "12.5"}])
        assert d["useCompany"]["product_create"]["items"] == [{"productNo": "NEW-1", "priceQuantity": 12.5}]
        with pytest.raises(TransportQueryError, match="already exists"):
            await run(session, q, v=[{"productNo": "NEW-2"}, {"productNo": "P00001"}])
        n = await run(session, "query { useCompany(no: 1) { product(filter: {productNo: {_like: \"NEW-%\"}}) { totalCount } } }")
        assert n["useCompany"]["product"]["totalCount"] == 1
        with pytest.raises(TransportQueryError, match="Company 7"):
            await run(session, "query { useCompany(no: 7) { product { totalCount } } }")


def _post(sb, body, token):
    return httpx.post(sb.url, json=body, headers={"authorization": f"Bearer {token}"} if token else {})


def test_raw_http_batches_auth_trace_id(sandbox):
    token = sandbox.token()
    q = {"query": "query($n: Int!) { useCompany(no: 1) { order(filter: {orderNo: {_eq: $n}}) { items { orderNo } } } }"}
    r = _post(sandbox, [{**q, "variables": {"n": i % 20 + 1}} for i in range(32)], token)
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and len(body) == 32
    assert [b["data"]["useCompany"]["order"]["items"][0]["orderNo"] for b in body] == [i % 20 + 1 for i in range(32)]
    assert body[0]["extensions"]["vbnxt-trace-id"]
    r = _post(sandbox, [{**q, "variables": {"n": 1}}] * 33, token)
    assert r.status_code == 200 and "exceeds the limit of 32" in r.json()["errors"][0]["message"]
    for bad in (None, "wrong-token"):
        r = _post(sandbox, {**q, "variables": {"n": 1}}, bad)
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("text/html") and "401 Authorization Required" in r.text
    sandbox.state.expire_tokens()
    r = _post(sandbox, {**q, "variables": {"n": 1}}, token)
    assert r.status_code == 401 and "<html>" in r.text
    # both endpoints
    r = httpx.post(sandbox.base + "/api/graphql", json={**q, "variables": {"n": 2}},
                   headers={"authorization": f"Bearer {sandbox.token()}"})
    assert r.json()["data"]["useCompany"]["order"]["items"] == [{"orderNo": 2}]
    bad = httpx.post(sandbox.token_url, data={"grant_type": "client_credentials", "client_id": "sandbox-client",
                                              "client_secret": "nope"})
    assert bad.status_code == 400


def test_rate_limit_429(sandbox_factory):
    sb = sandbox_factory(seed=1, rate_limit_per_min=5)
    token = sb.token()
    body = {"query": "{ useCompany(no: 1) { order { totalCount } } }"}
    codes = [_post(sb, body, token).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429, 429]
    assert _post(sb, body, sb.token()).status_code == 200  # per token


async def test_outstanding_limit(sandbox_factory):
    sb = sandbox_factory(seed=1, max_in_flight=3)
    httpx.post(sb.base + "/_sandbox/config", json={"work_delay_ms": 300}).raise_for_status()
    token = sb.token()
    async with httpx.AsyncClient(timeout=10) as http:
        rs = await asyncio.gather(*(http.post(sb.url, json={"query": "{ useCompany(no: 1) { order { totalCount } } }"},
                                              headers={"authorization": f"Bearer {token}"}) for _ in range(6)))
    bodies = [r.json() for r in rs]
    assert all(r.status_code == 200 for r in rs)
    limited = [b for b in bodies if b.get("errors")]
    assert len(limited) == 3
    err = limited[0]["errors"][0]
    assert err["extensions"]["code"] == "OUTSTANDING_LIMIT_EXCEEDED"
    assert err["message"] == "Company 1 has 3 requests in progress. Limit is 3."


def test_faults_and_stats(sandbox):
    token = sandbox.token()
    body = {"query": "{ useCompany(no: 1) { product { totalCount } } }"}
    sandbox.faults(malformed_rate=1.0)
    r = _post(sandbox, body, token)
    with pytest.raises(ValueError):
        r.json()
    sandbox.faults(error_rate=1.0, status=503)
    assert _post(sandbox, body, token).status_code == 503
    sandbox.clear_faults()
    assert _post(sandbox, body, token).json()["data"]["useCompany"]["product"]["totalCount"] == 20
    stats = sandbox.stats()
    assert stats["rows"] == {"order": 20, "orderLine": stats["rows"]["orderLine"], "product": 20}
    assert stats["requests"]["POST /api/graphql-service"]["503"] == 1


def test_configurable_time_zone_and_local_timestamps(sandbox_factory):
    from datetime import datetime, timezone

    from connectors.businessnxt.timezones import local_to_utc

    for tz in ("America/New_York", "Europe/Oslo"):
        sb = sandbox_factory(seed=0, timezone=tz)
        before = datetime.now(timezone.utc)
        d = sb.gql('mutation { useCompany(no: 1) { product_create(values: [{productNo: "T"}]) '
                   '{ items { createdTimestamp changedTimestamp } } } }')
        after = datetime.now(timezone.utc)
        item = d["data"]["useCompany"]["product_create"]["items"][0]
        ts = item["changedTimestamp"]
        assert ts == item["createdTimestamp"]
        assert len(ts) == 27 and ts[19] == "." and not ts.endswith("Z") and "+" not in ts  # 7 digits, no offset
        assert before.replace(microsecond=0) <= local_to_utc(ts, tz) <= after
