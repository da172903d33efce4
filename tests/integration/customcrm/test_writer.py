"""Writer against the real sandbox: classification, and exactly one record per create under faults."""
from __future__ import annotations

import httpx
import pytest

from connectors.customcrm.client import CustomcrmClient
from connectors.customcrm.writer import CustomcrmWriter
from schemas.command import WriteCommand, WriteResult
from tests.integration.customcrm.conftest import TOKEN

pytestmark = pytest.mark.integration


def create_cmd(i: int, entity: str = "product", data: dict | None = None) -> WriteCommand:
    return WriteCommand(
        command_id=f"cmd-create-{i}", flow="product-product", link_key=f"link-{i}", system="customcrm",
        entity=entity, op="create", idempotency_key=f"businessnxt:product:{i}",
        data=data or {"Sku": f"W-{i:05d}", "Name": f"Written {i}", "Price": "1.00"},
    )


def cmd(op: str, target: str | None, n: int, *, data=None, if_version=None, system="customcrm") -> WriteCommand:
    return WriteCommand(command_id=f"cmd-{op}-{n}", flow="product-product", link_key=f"link-{n}",
                        system=system, entity="product", op=op, target_id=target,
                        expected_version=None if if_version is None else str(if_version),
                        data=data or {})


async def apply_until_done(writer: CustomcrmWriter, commands: list[WriteCommand], rounds: int = 12) -> dict[str, WriteResult]:
    """Re-send what came back retryable, as the sink agent would."""
    done: dict[str, WriteResult] = {}
    pending = commands
    for _ in range(rounds):
        results = await writer.apply(pending)
        assert [r.command_id for r in results] == [c.command_id for c in pending]
        for c, r in zip(pending, results):
            if r.status != "retryable":
                done[c.command_id] = r
        pending = [c.model_copy(update={"attempt": c.attempt + 1}) for c, r in zip(pending, results)
                   if r.status == "retryable"]
        if not pending:
            return done
    pytest.fail(f"{len(pending)} commands still retryable after {rounds} rounds")


async def test_results_are_classified(sandbox):
    async with CustomcrmClient(sandbox.url, TOKEN, rate_limit=None) as client:
        writer = CustomcrmWriter(client)
        [a, b] = await writer.apply([create_cmd(1), create_cmd(2)])
        assert a.status == b.status == "ok" and a.version == "1" and a.record["Sku"] == "W-00001"
        commands = [
            cmd("update", a.target_id, 1, data={"Name": "renamed"}, if_version=1),
            cmd("update", a.target_id, 2, data={"Name": "stale"}, if_version=1),
            cmd("update", "prd_999999", 3, data={"Name": "x"}),
            cmd("update", b.target_id, 4, data={"Price": "free"}),
            cmd("delete", b.target_id, 5),
            cmd("update", b.target_id, 6, data={"Name": "after delete"}),
            cmd("update", None, 7, data={"Name": "no target"}),
            cmd("create", None, 8, system="businessnxt"),
            create_cmd(9, data={"Sku": "W-00001", "Name": "duplicate Sku"}),
            cmd("delete", b.target_id, 10),
        ]
        results = await writer.apply(commands)
    assert [r.status for r in results] == [
        "ok", "conflict", "not_found", "permanent", "ok", "not_found", "permanent", "permanent", "permanent", "ok"]
    assert results[0].version == "2" and results[0].record["Name"] == "renamed"
    assert "version 2" in results[1].error
    assert "Price" in results[3].error
    assert results[4].record["Deleted"] is True and results[4].version == "2"
    assert "deleted" in results[5].error
    assert "target_id" in results[6].error and "businessnxt" in results[7].error
    assert "Sku" in results[8].error
    assert all(r.command_id == c.command_id and r.link_key == c.link_key for r, c in zip(results, commands))


async def test_retrying_a_bulk_whose_outcome_is_unknown_creates_nothing_twice(start_sandbox):
    server = start_sandbox(rate_limit=None, random_seed=1)
    state = server.app.state.sandbox
    commands = [create_cmd(i) for i in range(100)]
    httpx.post(server.url + "/_sandbox/faults", json={"timeout_rate": 1.0, "hang_seconds": 1.0})
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, timeout=0.3, max_attempts=4,
                               retry_wait_initial=0.01, retry_wait_max=0.05) as client:
        writer = CustomcrmWriter(client)
        results = await writer.apply(commands)
        assert {r.status for r in results} == {"retryable"}
        assert "no answer" in results[0].error
        # the server committed at least one of the attempts although the client never heard
        assert state.store.counts()["products"]["total"] == 100
        httpx.delete(server.url + "/_sandbox/faults")
        again = await writer.apply(commands)
        assert {r.status for r in again} == {"ok"}
        assert state.store.counts()["products"]["total"] == 100
        assert len({r.target_id for r in again}) == 100
        # and once more: still the same records
        assert [r.target_id for r in await writer.apply(commands)] == [r.target_id for r in again]
    assert state.store.counts()["products"]["total"] == 100


async def test_1000_creates_under_faults_make_exactly_1000_records(start_sandbox):
    server = start_sandbox(rate_limit=(25, 1.0), random_seed=42)
    state = server.app.state.sandbox
    commands = [create_cmd(i) for i in range(1000)]
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, timeout=0.5, max_attempts=4,
                               retry_wait_initial=0.02, retry_wait_max=0.2) as client:
        writer = CustomcrmWriter(client, chunk_size=20)
        # 20 % 5xx, 20 % hangs (half of them after the write committed), plus the real rate limit
        httpx.post(server.url + "/_sandbox/faults",
                   json={"error_rate": 0.2, "status": 500, "timeout_rate": 0.2, "hang_seconds": 1.0})
        first = await apply_until_done(writer, commands[:500])
        # then injected 429s (Retry-After) with the hangs
        httpx.post(server.url + "/_sandbox/faults",
                   json={"error_rate": 0.2, "status": 429, "timeout_rate": 0.2, "hang_seconds": 1.0})
        second = await apply_until_done(writer, commands[500:])
        httpx.delete(server.url + "/_sandbox/faults")
    results = {**first, **second}
    assert len(results) == 1000 and {r.status for r in results.values()} == {"ok"}
    assert len({r.target_id for r in results.values()}) == 1000
    counts = state.store.counts()["products"]
    assert counts == {"total": 1000, "deleted": 0, "live": 1000}
    skus = {r["Sku"] for r in state.store.collections["products"].records.values()}
    assert skus == {f"W-{i:05d}" for i in range(1000)}
    stats = state.control.stats.snapshot()["requests"]["POST /api/v1/products/bulk"]
    # the faults really happened: server errors, hangs and rate limiting
    assert stats.get("500", 0) > 0 and stats.get("599", 0) > 0 and stats.get("429", 0) > 0, stats


async def test_a_retried_update_that_already_committed_is_ok_not_a_conflict(start_sandbox):
    server = start_sandbox(rate_limit=None, random_seed=1)
    async with CustomcrmClient(server.url, TOKEN, rate_limit=None, timeout=0.3, max_attempts=4,
                               retry_wait_initial=0.01, retry_wait_max=0.05) as client:
        writer = CustomcrmWriter(client)
        created = await writer.apply([create_cmd(i) for i in range(10)])
        updates = [cmd("update", r.target_id, i, data={"Name": f"new {i}"}, if_version=1)
                   for i, r in enumerate(created)]
        httpx.post(server.url + "/_sandbox/faults", json={"timeout_rate": 1.0, "hang_seconds": 1.0})
        assert {r.status for r in await writer.apply(updates)} == {"retryable"}
        records = server.app.state.sandbox.store.collections["products"].records
        assert any(r["Version"] == 2 for r in records.values())  # some committed unheard
        httpx.delete(server.url + "/_sandbox/faults")
        results = await writer.apply(updates)
        assert {r.status for r in results} == {"ok"}
        assert [r.version for r in results] == ["2"] * 10
        # a real conflict (someone else changed the value) stays a conflict
        await client.update("products", created[0].target_id, {"Name": "someone else"})
        [res] = await writer.apply([cmd("update", created[0].target_id, 99, data={"Name": "mine"}, if_version=2)])
        assert res.status == "conflict" and "version 3" in res.error
