"""CustomcrmClient against the live sandbox: every call, typed errors, retries, rate limiting."""
from __future__ import annotations

import asyncio
import logging
import time

import httpx
import pytest

from connectors.common.errors import (
    AuthError,
    NotFoundError,
    ServerError,
    TimeoutError_,
    ValidationError,
)
from connectors.customcrm.client import (
    CustomcrmClient,
    IdempotencyKeyReusedError,
    RecordDeletedError,
    VersionConflictError,
)
from tests.integration.customcrm.conftest import TOKEN

pytestmark = pytest.mark.integration


def stats(server) -> dict:
    return httpx.get(server.url + "/_sandbox/stats").json()["requests"]


async def test_every_call(sandbox):
    async with CustomcrmClient(sandbox.url, TOKEN, rate_limit=None) as c:
        p = await c.create("products", {"Sku": "C-1", "Name": "Client"}, idempotency_key="k-1")
        assert p == await c.create("product", {"Sku": "C-1", "Name": "Client"}, idempotency_key="k-1")
        assert (await c.get("products", p["Id"]))["Sku"] == "C-1"
        p2 = await c.update("products", p["Id"], {"Name": "Renamed"}, if_version=1)
        assert p2["Version"] == 2 and p2["Name"] == "Renamed"
        await c.delete("products", p["Id"], if_version=2)
        await c.delete("products", p["Id"])  # again: fine
        items, cursor = await c.list_changes("products", limit=10)
        assert [i["Id"] for i in items] == [p["Id"]] and items[0]["Deleted"] and cursor is None
        items, _ = await c.list_changes("products", modified_since=items[0]["ModifiedAt"])
        assert len(items) == 1
        results = await c.bulk("products", [
            {"op": "create", "idempotency_key": "b1", "data": {"Sku": "C-2", "Name": "Bulk"}},
            {"op": "delete", "id": "prd_999999", "if_version": None},
        ])
        assert [r["status"] for r in results] == [201, 404]
    assert stats(sandbox)["POST /api/v1/products"] == {"201": 2}


async def test_typed_errors_say_what_and_why(sandbox):
    async with CustomcrmClient(sandbox.url, TOKEN, rate_limit=None) as c:
        with pytest.raises(NotFoundError, match="GET /api/v1/orders/ord_404404"):
            await c.get("orders", "ord_404404")
        with pytest.raises(ValidationError) as exc:
            await c.create("users", {"FullName": "", "Email": "nope"})
        assert set(exc.value.details) == {"FullName", "Email"} and "Email" in str(exc.value)
        u = await c.create("users", {"FullName": "U", "Email": "u@x.io"}, idempotency_key="u")
        with pytest.raises(IdempotencyKeyReusedError):
            await c.create("users", {"FullName": "V", "Email": "v@x.io"}, idempotency_key="u")
        await c.update("users", u["Id"], {"Title": "t"})
        with pytest.raises(VersionConflictError) as exc:
            await c.update("users", u["Id"], {"Title": "x"}, if_version=1)
        assert exc.value.current_version == 2 and exc.value.status_kind == "conflict"
        await c.delete("users", u["Id"])
        with pytest.raises(RecordDeletedError):
            await c.update("users", u["Id"], {"Title": "x"})
    async with CustomcrmClient(sandbox.url, "wrong-token", rate_limit=None) as bad:
        with pytest.raises(AuthError) as exc:
            await bad.list_changes("orders")
    assert "wrong-token" not in str(exc.value) and "wrong-token" not in repr(bad)
    assert stats(sandbox)["GET /api/v1/orders"] == {"401": 1}  # not retried


async def test_retries_server_errors_and_malformed_bodies(start_sandbox):
    server = start_sandbox(seed=10, rate_limit=None, random_seed=3)
    httpx.post(server.url + "/_sandbox/faults", json={"error_rate": 0.3, "status": 503, "malformed_rate": 0.3})
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, max_attempts=10,
                               retry_wait_initial=0.01, retry_wait_max=0.05) as c:
        for i in range(1, 11):
            assert (await c.get("orders", f"ord_{i:06d}"))["Id"] == f"ord_{i:06d}"
        created = [await c.create("users", {"FullName": f"N{i}", "Email": f"n{i}@x.io"}) for i in range(10)]
    s = stats(server)
    assert s["GET /api/v1/orders/{id}"].get("503", 0) > 0
    assert s["GET /api/v1/orders/{id}"]["200"] > 10  # malformed 200s were retried
    # creates retried after a malformed (committed) answer made no duplicates
    assert len({u["Id"] for u in created}) == 10
    assert server.app.state.sandbox.store.counts()["users"]["total"] == 1 + 10  # 1 seeded + 10


async def test_gives_up_after_max_attempts(start_sandbox):
    server = start_sandbox(rate_limit=None)
    httpx.post(server.url + "/_sandbox/faults", json={"error_rate": 1.0, "status": 500})
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, max_attempts=3,
                               retry_wait_initial=0.01, retry_wait_max=0.02) as c:
        with pytest.raises(ServerError, match="server error"):
            await c.list_changes("orders")
    assert stats(server)["GET /api/v1/orders"] == {"500": 3}


async def test_timeout_is_typed(start_sandbox):
    server = start_sandbox(rate_limit=None)
    httpx.post(server.url + "/_sandbox/faults", json={"timeout_rate": 1.0, "hang_seconds": 1.0})
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, timeout=0.2, max_attempts=2,
                               retry_wait_initial=0.01, retry_wait_max=0.02) as c:
        with pytest.raises(TimeoutError_, match="outcome unknown"):
            await c.get("orders", "ord_000001")


async def test_honours_retry_after(start_sandbox):
    server = start_sandbox(rate_limit=(3, 1.0))
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, max_attempts=5) as c:
        start = time.monotonic()
        for _ in range(5):
            await c.list_changes("users")
        elapsed = time.monotonic() - start
    s = stats(server)["GET /api/v1/users"]
    assert s["200"] == 5 and s.get("429", 0) >= 1
    assert elapsed >= 1.0  # waited for Retry-After: 1 instead of hammering
    assert s["429"] <= 2


async def test_client_rate_limit_means_no_429_in_a_healthy_run(start_sandbox):
    server = start_sandbox(rate_limit=(20, 2.0))
    async with CustomcrmClient(server.url, TOKEN, rate_limit=(18, 2.0), max_concurrency=8) as c:
        await asyncio.gather(*(c.list_changes("orders") for _ in range(30)))
    assert stats(server)["GET /api/v1/orders"] == {"200": 30}


async def test_token_is_never_logged(start_sandbox, caplog):
    server = start_sandbox(rate_limit=None, random_seed=11)
    httpx.post(server.url + "/_sandbox/faults", json={"error_rate": 0.5, "status": 503})
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-token-value"
    async with CustomcrmClient(server.url, secret, rate_limit=None, max_attempts=3,
                               retry_wait_initial=0.01, retry_wait_max=0.02) as c:
        for _ in range(5):
            # retried 503s (logged), then the 401 -- or the last 503 when all attempts failed
            with pytest.raises((AuthError, ServerError)) as exc:
                await c.get("orders", "ord_000001")
            assert secret not in str(exc.value)
    assert "retry" in caplog.text.lower()  # the retries were logged...
    assert secret not in caplog.text  # ...without the token
