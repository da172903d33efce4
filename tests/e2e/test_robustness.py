"""References wait, crashes leave no duplicates, bad input is dead-lettered
(invariants 1, 6 and 7), end to end."""
from __future__ import annotations

import json
import random

import pytest

from tests.e2e.harness import bnxt_all, crm_all, crm_create, in_sync, metric, run, stamped, wait_for, wait_in_sync

pytestmark = pytest.mark.e2e


def deadletters(p) -> list[dict]:
    return json.loads(p.cli("deadletters", "list", "--json").stdout)


def test_order_waits_for_its_product_then_syncs(pipeline_factory):
    """An order whose product is created in the same run (and linked after the order
    arrives) parks, then syncs once the product link exists. (Pacing by reference is off:
    it would hold the order until the product is linked, and then nothing parks.)"""
    import httpx

    p = pipeline_factory(seed=0, env_extra={"TALKSTREAM_REFERENCE_WAIT": "0"})
    p.start_worker()
    # the ERP answers slowly for a while, so the product's link is made well after the order arrives
    httpx.post(p.bnxt_base + "/_sandbox/faults", json={"latency_ms": 2500}).raise_for_status()
    product = crm_create(p, "products", {"Sku": "LATE-1", "Name": "Created in the same run", "Price": "2.00"})
    order = crm_create(p, "orders", {"Name": "Waits for its product", "CustomerNo": 10001,
                                     "OrderDate": "2026-11-25",
                                     "Lines": [{"LineNo": 1, "ProductId": product["Id"], "Quantity": "1",
                                                "UnitPrice": "2.00"}]})
    wait_for(lambda: metric(p, 'talkstream_parked_total{flow="order-order"}') >= 1, timeout=60,
             message="the order parked")
    httpx.delete(p.bnxt_base + "/_sandbox/faults").raise_for_status()

    def order_synced():
        rows = stamped(run(bnxt_all(p, "order")), "customcrm:order:").get(order["Id"], [])
        return len(rows) == 1 and [l["productNo"] for l in rows[0]["orderLines"]] == ["LATE-1"]
    wait_for(order_synced, timeout=60, message="parked order synced")
    assert deadletters(p) == []


def test_bad_records_are_dead_lettered_and_the_rest_syncs(pipeline_factory):
    p = pipeline_factory(seed=5, env_extra={"TALKSTREAM_PARK_TIMEOUT": "3"})
    p.start_worker()
    wait_for(lambda: in_sync(p), timeout=60, message="initial sync")
    p.worker.stop()
    # while no worker runs: an order whose product is deleted before it was ever linked, so its
    # reference can never resolve (unknown reference past its bound) ...
    product = crm_create(p, "products", {"Sku": "GONE-1", "Name": "Deleted before linking", "Price": "1.00"})
    ghost = crm_create(p, "orders", {"Name": "Ghost line", "CustomerNo": 10001, "OrderDate": "2026-11-25",
                                     "Lines": [{"LineNo": 1, "ProductId": product["Id"], "Quantity": "1",
                                                "UnitPrice": "1"}]})

    async def delete_product():
        async with p.crm() as c:
            await c.delete("products", product["Id"])
    run(delete_product())
    # ... an order the ERP rejects (unknown customer): a permanent API error ...
    rejected = crm_create(p, "orders", {"Name": "Bad customer", "CustomerNo": 99999, "OrderDate": "2026-11-25"})
    # ... and a good one
    good = crm_create(p, "orders", {"Name": "Good one", "CustomerNo": 10002, "OrderDate": "2026-11-25"})
    p.start_worker()

    def dead_keys():
        return {d["link_key"]: d for d in deadletters(p)}
    wanted = {f"order-order:{rejected['Id']}", f"order-order:{ghost['Id']}"}
    wait_for(lambda: wanted <= set(dead_keys()), timeout=90, message="dead letters written")
    dead = dead_keys()
    assert "customer" in dead[f"order-order:{rejected['Id']}"]["reason"]
    entry = dead[f"order-order:{ghost['Id']}"]
    assert entry["error_type"] == "unknown_reference" and product["Id"] in entry["reason"]
    wait_for(lambda: good["Id"] in stamped(run(bnxt_all(p, "order")), "customcrm:order:"), timeout=60,
             message="the good record still syncs")
    wait_for(lambda: _synced_except(p, wanted), timeout=60, message="seeded records in sync")


def _synced_except(p, dead_keys) -> bool:
    orders = [o for o in run(crm_all(p, "orders")) if f"order-order:{o['Id']}" not in dead_keys and not o["Deleted"]]
    rows = stamped(run(bnxt_all(p, "order")), "customcrm:order:")
    return all(len(rows.get(o["Id"], [])) == 1 for o in orders)


def test_kill_9_during_initial_load_leaves_no_duplicates(pipeline_factory):
    seed = 120
    p = pipeline_factory(seed=seed)
    rnd = random.Random(7)
    for _ in range(3):
        p.start_worker()
        target = rnd.randint(5, seed)
        wait_for(lambda: p.bnxt_stats()["rows"]["order"] + p.bnxt_stats()["rows"]["product"] >= target
                 or p.bnxt_stats()["rows"]["order"] >= seed + seed // 10, timeout=120, message="some progress")
        p.worker.kill9()
    p.start_worker()
    wait_for(lambda: p.bnxt_stats()["rows"]["order"] >= seed + seed // 10 and
             p.bnxt_stats()["rows"]["product"] >= seed, timeout=180, message="load completes")

    wait_in_sync(p, timeout=180)
    rows = p.bnxt_stats()["rows"]
    assert rows["order"] == seed + seed // 10 and rows["product"] == seed  # no duplicates
