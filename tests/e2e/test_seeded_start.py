"""Seeded start: every Customcrm record gets exactly one Businessnxt record with
the mapped values and lines; a second run over the same data writes nothing."""
from __future__ import annotations

import os

import pytest

from tests.e2e.harness import assert_in_sync, in_sync, settle, wait_for, writes

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("TALKSTREAM_E2E_SEED", "500"))


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
    wait_for(lambda: in_sync(p), timeout=120, message="values in sync")
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
    settle(p, quiet=5.0)
    after_b, after_c = p.bnxt_stats(), p.crm_stats()
    assert after_b["rows"] == before_b["rows"]
    assert after_b["mutations"] - before_b["mutations"] == 0
    assert writes(after_c) - writes(before_c) == 0


def _links(p) -> int:
    import json

    data = json.loads(p.cli("status", "--json").stdout)
    return sum(f["linked"] for f in data["flows"].values())
