"""BusinessnxtClient against the real sandbox server: tokens (expiry, refresh,
401), typed errors, retries only where safe, limits, row helpers."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from connectors.businessnxt.client import GraphQLRequestError, OutstandingLimitError
from connectors.common.errors import AuthError, MalformedResponseError, RateLimitedError, ServerError, TimeoutError_

from .conftest import closing

pytestmark = pytest.mark.integration

COUNT = "query($cid: Int!) { useCompany(no: $cid) { order { totalCount } } }"


async def test_token_refresh_before_expiry_and_on_401(sandbox_factory, caplog):
    sb = sandbox_factory(seed=3, token_ttl=2)
    async with closing(sb.client()) as c:
        assert (await c.query(COUNT, {"cid": 1}))["useCompany"]["order"]["totalCount"] == 3
        assert c.token_fetches == 1
        # ttl 2 s -> refreshed 0.2 s before expiry: after expiry the next call gets a new token first
        c._token_expiry = 0.0  # simulate the clock passing the refresh point
        await c.query(COUNT, {"cid": 1})
        assert c.token_fetches == 2
        # the server revokes every token: one 401, one refresh, success
        sb.state.expire_tokens()
        await c.query(COUNT, {"cid": 1})
        assert c.token_fetches == 3
        assert sb.stats()["requests"]["POST /api/graphql-service"]["401"] == 1
    secret_logged = [r for r in caplog.records if "sandbox-secret" in r.getMessage()]
    assert not secret_logged
    assert "sandbox-secret" not in repr(c)


async def test_wrong_secret_is_auth_error(sandbox):
    c = sandbox.client()
    c._secret = "wrong"
    async with closing(c):
        with pytest.raises(AuthError):
            await c.query(COUNT, {"cid": 1})


async def test_graphql_error_is_typed_with_path(sandbox):
    async with closing(sandbox.client()) as c:
        with pytest.raises(GraphQLRequestError) as ei:
            await c.create("product", [{"productNo": "P00001"}])
        assert "already exists" in ei.value.message
        assert ei.value.path == ["useCompany", "product_create"]
        assert not ei.value.retryable


async def test_retries_429_and_outstanding_for_queries_and_mutations(sandbox_factory):
    sb = sandbox_factory(seed=2, rate_limit_per_min=4)
    async with closing(sb.client(max_attempts=3)) as c:
        for _ in range(4):
            await c.query(COUNT, {"cid": 1})
        with pytest.raises(RateLimitedError):
            await c.query(COUNT, {"cid": 1})
        assert sb.stats()["requests"]["POST /api/graphql-service"]["429"] == 3  # 3 attempts

    # the in-flight limit: concurrent requests of three clients (one client's concurrent
    # operations would leave together, as one request)
    sb = sandbox_factory(seed=2, max_in_flight=1)
    httpx.post(sb.base + "/_sandbox/config", json={"work_delay_ms": 150}).raise_for_status()
    clients = [sb.client(max_attempts=10, backoff_initial=0.05, backoff_max=0.3) for _ in range(3)]
    made = await asyncio.gather(*(c.create("product", [{"productNo": f"X{i}"}]) for i, c in enumerate(clients)))
    assert sorted(r[0]["productNo"] for r in made) == ["X0", "X1", "X2"]
    for c in clients:
        await c.aclose()
    clients = [sb.client(max_attempts=1) for _ in range(3)]
    res = await asyncio.gather(*(c.query(COUNT, {"cid": 1}) for c in clients), return_exceptions=True)
    assert any(isinstance(r, OutstandingLimitError) for r in res)
    for c in clients:
        await c.aclose()


async def test_mutation_with_unknown_outcome_is_not_retried(sandbox):
    async with closing(sandbox.client(max_attempts=4)) as c:
        await c.query(COUNT, {"cid": 1})
        sandbox.faults(error_rate=1.0, status=500)
        before = sandbox.stats()["requests"]["POST /api/graphql-service"].get("500", 0)
        with pytest.raises(ServerError):
            await c.create("product", [{"productNo": "Z1"}])
        assert sandbox.stats()["requests"]["POST /api/graphql-service"]["500"] - before == 1
        with pytest.raises(ServerError):  # a query is retried max_attempts times
            await c.query(COUNT, {"cid": 1})
        assert sandbox.stats()["requests"]["POST /api/graphql-service"]["500"] - before == 5
        sandbox.faults(malformed_rate=1.0)
        with pytest.raises(MalformedResponseError):
            await c.create("product", [{"productNo": "Z2"}])
        sandbox.faults(timeout_rate=1.0, hang_seconds=2.0)
    async with closing(sandbox.client(timeout=0.3, max_attempts=2)) as c:
        with pytest.raises(TimeoutError_):
            await c.create("product", [{"productNo": "Z3"}])
    sandbox.clear_faults()


async def test_row_helpers_paging_and_keys(sandbox_factory):
    sb = sandbox_factory(seed=120)
    async with closing(sb.client()) as c:
        rows = await c.read_all("order", page_size=25, order_by=[{"orderNo": "ASC"}])
        assert [r["orderNo"] for r in rows] == list(range(1, 121))
        assert all(r["orderLines"] and r["orderLines"][0]["orderNo"] == r["orderNo"] for r in rows)
        by_key = await c.read_by_keys("product", ["P00003", "P00099", "nope"])
        assert set(by_key) == {"P00003", "P00099"}
        made = await c.create("order", [{"customerNo": 10000 + i, "name": f"n{i}"} for i in range(50)])
        assert [r["orderNo"] for r in made] == list(range(121, 171))
        upd = await c.update("order", [{"orderNo": {"_eq": r["orderNo"]}} for r in made],
                             [{"name": f"m{i}"} for i in range(50)])
        assert [r["name"] for r in upd] == [f"m{i}" for i in range(50)]
        assert await c.delete("order", {"orderNo": {"_gte": 121}}) == 50


async def test_batch_requests(sandbox):
    async with closing(sandbox.client()) as c:
        ok = "query($cid: Int!, $n: Int) { useCompany(no: $cid) { order(filter: {orderNo: {_eq: $n}}) { items { orderNo } } } }"
        res = await c.batch([(ok, {"cid": 1, "n": 1}), (ok, {"cid": 2, "n": 1}), (ok, {"cid": 1, "n": 3})])
        assert res[0]["useCompany"]["order"]["items"] == [{"orderNo": 1}]
        assert isinstance(res[1], GraphQLRequestError) and "Company 2" in res[1].message
        assert res[2]["useCompany"]["order"]["items"] == [{"orderNo": 3}]
        with pytest.raises(ValueError):
            await c.batch([(ok, {"cid": 1, "n": 1})] * 33)


async def test_operations_that_wait_together_leave_as_one_request_with_their_own_answers(sandbox_factory):
    sb = sandbox_factory(seed=5)
    httpx.post(sb.base + "/_sandbox/config", json={"work_delay_ms": 100}).raise_for_status()
    one = "query($cid: Int!, $n: Int) { useCompany(no: $cid) { order(filter: {orderNo: {_eq: $n}}) { items { orderNo } } } }"
    async with closing(sb.client(max_concurrency=1)) as c:
        before = sb.stats()["requests"].get("POST /api/graphql-service", {}).get("200", 0)
        first = asyncio.create_task(c.query(one, {"cid": 1, "n": 1}))
        while c.http_requests == 0:  # the first request holds the only connection slot
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(c.query(one, {"cid": 1, "n": n})) for n in (2, 3, 4)]
        bad = asyncio.create_task(c.query(one, {"cid": 7, "n": 1}))  # an unknown company: its own error
        answers = await asyncio.gather(first, *rest)
        assert [a["useCompany"]["order"]["items"] for a in answers] == [[{"orderNo": n}] for n in (1, 2, 3, 4)]
        with pytest.raises(GraphQLRequestError, match="Company 7"):
            await bad
        assert c.http_requests == 2
        assert sb.stats()["requests"]["POST /api/graphql-service"]["200"] - before == 2


async def test_a_failed_shared_request_is_retried_for_its_query_but_not_for_its_mutation(sandbox):
    async with closing(sandbox.client(max_attempts=3)) as c:
        await c.query(COUNT, {"cid": 1})  # holds a token: the faults below hit the token endpoint too
        sandbox.faults(error_rate=1.0, status=500)
        created, counted = await asyncio.gather(c.create("product", [{"productNo": "SHARED-1"}]),
                                                c.query(COUNT, {"cid": 1}), return_exceptions=True)
        assert isinstance(created, ServerError) and isinstance(counted, ServerError)
        # one request carried both; only the query was sent again (twice)
        assert sandbox.stats()["requests"]["POST /api/graphql-service"]["500"] == 3
    sandbox.clear_faults()
    async with closing(sandbox.client()) as c:
        assert await c.read_by_keys("product", ["SHARED-1"]) == {}  # the 500 came instead of running it
