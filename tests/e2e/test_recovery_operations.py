"""Dead-letter redrive after a fix, and rebuilding the links after the embedded
broker lost everything."""
from __future__ import annotations

import json

import httpx
import pytest

from streams.embedded_broker import EmbeddedBroker
from tests.e2e.harness import bnxt_all, crm_all, in_sync, run, stamped, wait_for, worker_status, writes

pytestmark = pytest.mark.e2e


def _dead(p) -> list[dict]:
    return json.loads(p.cli("deadletters", "list", "--json").stdout)


@pytest.mark.parametrize("broker_kind, store", [
    pytest.param("embedded", "memory://", id="embedded"),
    pytest.param("kafka", "rocksdb://", id="kafka-rocksdb", marks=pytest.mark.kafka)])
def test_deadletter_redrive_after_the_fix(pipeline_factory, broker_kind, store):
    p = pipeline_factory(seed=3, broker_kind=broker_kind, store=store,
                         env_extra={"TALKSTREAM_WRITE_RETRY_MAX": "2"})
    p.start_worker()
    wait_for(lambda: p.bnxt_stats()["rows"]["order"] >= 3, timeout=60, message="initial sync")
    # the ERP fails every request for a while: the write's retries run out -> dead letter
    httpx.post(p.bnxt_base + "/_sandbox/faults", json={"error_rate": 1.0, "status": 400}).raise_for_status()

    async def create():
        async with p.crm() as c:
            return await c.create("orders", {"Name": "During the outage", "CustomerNo": 10004,
                                             "OrderDate": "2026-11-25"})
    order = run(create())
    key = f"order-order:{order['Id']}"
    wait_for(lambda: any(d["link_key"] == key for d in _dead(p)), timeout=60, message="dead-lettered")
    entry = next(d for d in _dead(p) if d["link_key"] == key)
    assert entry["flow"] == "order-order" and entry["reason"]
    listing = p.cli("deadletters", "list").stdout
    assert "order-order" in listing
    # the fix: the ERP is back; re-drive
    httpx.delete(p.bnxt_base + "/_sandbox/faults").raise_for_status()
    p.cli("deadletters", "redrive", "--id", entry["id"])
    wait_for(lambda: order["Id"] in stamped(run(bnxt_all(p, "order")), "customcrm:order:"), timeout=60,
             message="re-driven order created")
    assert all(d["id"] != entry["id"] for d in _dead(p))  # no longer listed


def test_broker_loss_rebuilds_links_without_duplicates_or_writes(pipeline_factory):
    seed = 40
    p = pipeline_factory(seed=seed)
    p.start_worker()
    wait_for(lambda: p.bnxt_stats()["rows"]["order"] >= seed + seed // 10 and
             p.bnxt_stats()["rows"]["product"] >= seed, timeout=120, message="initial sync")
    wait_for(lambda: in_sync(p), timeout=60, message="in sync")
    # the in-memory broker dies and comes back empty: topics, tables, watermarks are gone
    p.worker.stop()
    p.broker.kill()
    p.broker = EmbeddedBroker().start()
    rows_before, b0, c0 = p.bnxt_stats()["rows"], p.bnxt_stats()["mutations"], writes(p.crm_stats())
    p.start_worker()
    wait_for(lambda: _linked(p) >= seed * 2 + seed // 10, timeout=120, message="links rebuilt")
    assert p.bnxt_stats()["rows"] == rows_before
    assert p.bnxt_stats()["mutations"] == b0 and writes(p.crm_stats()) == c0
    # and syncing goes on
    order = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])[0]

    async def edit():
        async with p.crm() as c:
            await c.update("orders", order["Id"], {"Name": "after the broker came back"})
    run(edit())
    wait_for(lambda: stamped(run(bnxt_all(p, "order")), "customcrm:order:")[order["Id"]][0]["name"]
             == "after the broker came back", timeout=30, message="edit synced after rebuild")


def _linked(p) -> int:
    return sum(f["linked"] for f in worker_status(p)["flows"].values())
