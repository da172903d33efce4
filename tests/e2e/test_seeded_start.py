"""Seeded start: every Customcrm record gets exactly one Businessnxt record with
the mapped values and lines; a second run over the same data writes nothing."""
from __future__ import annotations

import os

import pytest

from streams.mapping import DictRefResolver, load_mapping
from tests.e2e.harness import bnxt_all, crm_all, run, stamped, wait_for, writes

pytestmark = pytest.mark.e2e

MAPPING = load_mapping()
SEED = int(os.environ.get("TALKSTREAM_E2E_SEED", "500"))


def snapshot(p):
    products = run(crm_all(p, "products"))
    orders = run(crm_all(p, "orders"))
    users = run(crm_all(p, "users"))
    b_products = run(bnxt_all(p, "product"))
    b_orders = run(bnxt_all(p, "order"))
    return products, orders, users, b_products, b_orders


def assert_in_sync(p):
    products, orders, users, b_products, b_orders = snapshot(p)
    by_no = {}
    for row in b_products:
        by_no.setdefault(row["productNo"], []).append(row)
    refs = DictRefResolver({prd["Id"]: prd["Sku"] for prd in products})
    flow = MAPPING.flow("product-product")
    for prd in products:
        rows = by_no.get(prd["Sku"], [])
        assert len(rows) == 1, f"product {prd['Id']}: {len(rows)} Businessnxt products"
        assert flow.changed_properties(flow.to_canonical("source", prd),
                                       flow.to_canonical("target", rows[0])) == [], prd["Id"]
    for flow_id, records, prefix in (("order-order", orders, "customcrm:order:"),
                                     ("user-order", users, "customcrm:user:")):
        flow = MAPPING.flow(flow_id)
        rows_by_id = stamped(b_orders, prefix)
        assert set(rows_by_id) == {r["Id"] for r in records}, flow_id
        for rec in records:
            rows = rows_by_id[rec["Id"]]
            assert len(rows) == 1, f"{flow_id} {rec['Id']}: {len(rows)} Businessnxt orders"
            src = flow.to_canonical("source", rec)
            tgt = flow.to_canonical("target", rows[0], refs=refs)
            assert flow.changed_properties(src, tgt) == [], (rec["Id"], src, tgt)
    return len(products), len(orders), len(users)


def test_seeded_start_creates_exactly_one_target_each_and_a_rerun_writes_nothing(pipeline_factory):
    existing = 20  # rows already in the ERP that no flow owns: left alone
    p = pipeline_factory(seed=SEED, bnxt_seed=existing)
    p.start_worker()
    expected_products = SEED + existing
    expected_orders = SEED + SEED // 10 + existing

    def done():
        stats = p.bnxt_stats()["rows"]
        return stats["product"] >= SEED and stats["order"] >= expected_orders
    wait_for(done, timeout=240, message="all records created in Businessnxt")
    wait_for(lambda: _synced(p), timeout=120, message="values in sync")
    n_products, n_orders, n_users = assert_in_sync(p)
    assert (n_products, n_orders, n_users) == (SEED, SEED, SEED // 10)
    rows = p.bnxt_stats()["rows"]
    assert rows["product"] == expected_products and rows["order"] == expected_orders

    # a second run with the same data: a new worker group with no link state re-reads both
    # systems from scratch (watermarks reset) and must rebuild its links, writing nothing
    p.worker.stop()
    p.resync_all()
    before_b, before_c = p.bnxt_stats(), p.crm_stats()
    p.app_id += "-rerun"
    p.start_worker()
    wait_for(lambda: _links(p) >= SEED * 2 + SEED // 10, timeout=120, message="links rebuilt")
    _settle(p)
    after_b, after_c = p.bnxt_stats(), p.crm_stats()
    assert after_b["rows"] == before_b["rows"]
    assert _mutations(after_b) - _mutations(before_b) == 0
    assert writes(after_c) - writes(before_c) == 0


def _links(p) -> int:
    import json

    data = json.loads(p.cli("status", "--json").stdout)
    return sum(f["linked"] for f in data["flows"].values())


def _synced(p) -> bool:
    try:
        assert_in_sync(p)
        return True
    except AssertionError:
        return False


def _settle(p, quiet: float = 5.0) -> None:
    """Wait until the systems saw no write for ``quiet`` seconds (the worker caught up)."""
    import time

    last = (_mutations(p.bnxt_stats()), writes(p.crm_stats()))
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.5)
        now = (_mutations(p.bnxt_stats()), writes(p.crm_stats()))
        if now != last:
            last, since = now, time.monotonic()


def _mutations(stats: dict) -> int:
    return int(stats.get("mutations", 0))
