"""The production engine: RocksDB tables on both brokers, in-memory tables on Apache Kafka,
and several workers sharing the partitions of an Apache Kafka.

For each engine a worker is killed (``kill -9``) during the initial load and restarted on
the same data directory, then stopped cleanly and restarted, then killed at rest and
restarted: every time it recovers every link (the links it reports as it becomes ready
are the links the load made), nothing is written twice, and an edit still makes exactly
one write. (The embedded broker with in-memory tables is what every other e2e test runs.)
"""
from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import (Pipeline, assert_in_sync, bnxt_all, crm_all, crm_update, run, settle, stamped,
                               wait_for, wait_in_sync, worker_status, writes)

pytestmark = pytest.mark.e2e

SEED = 40
LINKS = {"order-order": SEED, "product-product": SEED, "user-order": SEED // 10}

ENGINES = [
    pytest.param(("embedded", "rocksdb://"), id="embedded-rocksdb"),
    pytest.param(("kafka", "rocksdb://"), id="kafka-rocksdb", marks=pytest.mark.kafka),
    pytest.param(("kafka", "memory://"), id="kafka-memory", marks=pytest.mark.kafka),
]


def linked(p: Pipeline) -> dict[str, int]:
    """Links per flow as the worker reports them (its link index, rebuilt from the table at recovery)."""
    return {flow: row["linked"] for flow, row in worker_status(p)["flows"].items()}


def no_duplicates(p: Pipeline) -> None:
    rows = p.bnxt_stats()["rows"]
    assert rows["product"] == SEED and rows["order"] == SEED + SEED // 10, rows
    for prefix in ("customcrm:order:", "customcrm:user:"):
        assert all(len(v) == 1 for v in stamped(run(bnxt_all(p, "order")), prefix).values()), prefix


def restart_recovers_every_link(p: Pipeline) -> None:
    """The restarted worker holds every link as soon as it is ready, and writes nothing."""
    before_b, before_c = p.bnxt_stats()["mutations"], writes(p.crm_stats())
    p.start_worker()
    assert linked(p) == LINKS, "links lost in recovery"
    settle(p, quiet=3.0)
    assert (p.bnxt_stats()["mutations"], writes(p.crm_stats())) == (before_b, before_c)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_worker_recovers_every_link_after_kill_9_and_a_clean_stop(pipeline_factory, engine):
    broker_kind, store = engine
    p = pipeline_factory(seed=SEED, broker_kind=broker_kind, store=store)
    p.start_worker()
    wait_for(lambda: p.bnxt_stats()["rows"]["product"] >= SEED // 2, timeout=120, message="load under way")
    p.worker.kill9()  # mid-load
    p.start_worker()
    wait_in_sync(p, timeout=180)
    wait_for(lambda: linked(p) == LINKS, timeout=60, message="every link linked")
    no_duplicates(p)
    if store.startswith("rocksdb"):  # the tables really are on disk, in this worker's data directory
        assert list((p.tmp / "data").rglob("CURRENT")), "no RocksDB database in the data directory"

    p.worker.stop()  # clean stop (SIGTERM), same data directory
    assert p.worker.process.returncode is not None
    restart_recovers_every_link(p)

    p.worker.kill9()  # at rest
    restart_recovers_every_link(p)

    order = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])[0]
    before = p.bnxt_stats()["mutations"]
    crm_update(p, "orders", order["Id"], {"Name": "edited after the restarts"})
    wait_for(lambda: stamped(run(bnxt_all(p, "order")), "customcrm:order:")[order["Id"]][0]["name"]
             == "edited after the restarts", timeout=30, message="the edit arrived")
    settle(p)
    assert p.bnxt_stats()["mutations"] - before == 1
    assert_in_sync(p)
    no_duplicates(p)


@pytest.mark.kafka
def test_two_workers_share_the_partitions_of_an_apache_kafka(pipeline_factory):
    """Two workers, each with its own data directory (RocksDB) and web port, split the
    partitions; the load converges with exactly one target per record."""
    p = pipeline_factory(seed=SEED, broker_kind="kafka", store="rocksdb://")
    first = p.start_worker()
    first_port = p.web_port
    second = p.add_worker("worker-b", web=True)
    second_port = second.web_port
    wait_for(lambda: "talkstream worker ready" in second.output() or not second.alive(), timeout=90,
             message="second worker ready")
    assert second.alive(), second.output()[-3000:]
    wait_in_sync(p, timeout=180)
    no_duplicates(p)

    def split() -> bool:
        """Both workers hold links, and together exactly every link."""
        counts = []
        for port in (first_port, second_port):
            flows = httpx.get(f"http://127.0.0.1:{port}/status", timeout=5).json()["flows"]
            counts.append({flow: row["linked"] for flow, row in flows.items()})
        total = {flow: sum(c[flow] for c in counts) for flow in LINKS}
        return total == LINKS and all(sum(c.values()) > 0 for c in counts)
    wait_for(split, timeout=60, message="the links split between the two workers")
    assert list((p.tmp / "data-worker-b").rglob("CURRENT")), "the second worker has no RocksDB database of its own"
    assert first.alive() and second.alive()
