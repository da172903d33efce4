"""Operating talkstream: replay, resync, metrics, the example downstream consumer
(issue: running it). Dead-letter redrive and broker loss are in
test_recovery_operations.py."""
from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import sys
import threading
from pathlib import Path

import httpx
import pytest

from connectors.common.kafka import read_all
from streams import linkcodec
from streams.mapping import load_mapping
from tests.e2e.harness import settle, Pipeline, bnxt_all, crm_all, run, stamped, wait_for, worker_status, writes

pytestmark = pytest.mark.e2e

SEED = 15
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=[pytest.param(("embedded", "memory://"), id="embedded"),
                                        pytest.param(("kafka", "rocksdb://"), id="kafka-rocksdb",
                                                     marks=pytest.mark.kafka)])
def p(request, tmp_path_factory):
    broker_kind, store = request.param
    pipe = Pipeline(tmp_path_factory.mktemp("ops"), seed=SEED, broker_kind=broker_kind, store=store)
    try:
        pipe.start()
        pipe.start_worker()
        wait_for(lambda: pipe.bnxt_stats()["rows"]["order"] >= SEED + SEED // 10, timeout=120,
                 message="initial sync")
        wait_for(lambda: _all_linked(pipe), timeout=60, message="all linked")
        yield pipe
    finally:
        pipe.stop()


def _all_linked(p) -> bool:
    from streams.progress import Progress

    return Progress.all_linked(worker_status(p))


def test_replay_in_sync_makes_zero_writes(p):
    settle(p)
    before_b, before_c = p.bnxt_stats()["mutations"], writes(p.crm_stats())
    result = p.cli("replay", "--flow", "order-order", "--since", "earliest")
    assert "re-fed" in result.stdout
    wait_for(lambda: "verify" in _decisions(p), timeout=30, message="replayed events processed")
    settle(p, quiet=4.0)
    assert p.bnxt_stats()["mutations"] - before_b == 0
    assert writes(p.crm_stats()) - before_c == 0


def _decisions(p) -> str:
    return httpx.get(f"http://127.0.0.1:{p.web_port}/metrics", timeout=5).text


def test_replay_repairs_a_target_removed_behind_our_back(p):
    orders = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])
    victim = orders[0]
    row = stamped(run(bnxt_all(p, "order")), "customcrm:order:")[victim["Id"]][0]

    async def remove():
        async with p.bnxt() as b:
            await b.delete("order", {"orderNo": {"_eq": row["orderNo"]}})
    run(remove())  # polling cannot see deletes; webhooks are off in this pipeline
    assert victim["Id"] not in stamped(run(bnxt_all(p, "order")), "customcrm:order:")
    p.cli("replay", "--flow", "order-order")
    wait_for(lambda: len(stamped(run(bnxt_all(p, "order")), "customcrm:order:").get(victim["Id"], [])) == 1,
             timeout=60, message="removed order re-created")
    rebuilt = stamped(run(bnxt_all(p, "order")), "customcrm:order:")[victim["Id"]][0]
    assert rebuilt["name"] == victim["Name"]


def test_resync_rereads_the_source(p):
    topic = "customcrm.product.changes"
    before = len(run(read_all(p.broker.bootstrap, topic)))
    p.cli("resync", "--system", "customcrm", "--entity", "product")
    wait_for(lambda: len(run(read_all(p.broker.bootstrap, topic))) >= before + SEED, timeout=60,
             message="every product published again")
    settle(p)
    assert _all_linked(p)


def test_metrics_endpoint_names_and_counters_move(p):
    text = _decisions(p)
    for name in ("talkstream_events_in_total", "talkstream_events_out_total", "talkstream_writes_total",
                 "talkstream_echoes_suppressed_total", "talkstream_merges_total", "talkstream_parked_total",
                 "talkstream_deadletters_total", "talkstream_api_request_seconds", "talkstream_sync_latency_seconds",
                 "talkstream_polls_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name

    def value(prefix: str) -> float:
        return sum(float(line.split()[-1]) for line in _decisions(p).splitlines()
                   if line.startswith(prefix) and not line.startswith("#"))
    polls, writes_ok = value("talkstream_polls_total"), value('talkstream_writes_total{')
    assert writes_ok > 0 and value("talkstream_sync_latency_seconds_count") > 0
    order = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])[1]

    async def edit():
        async with p.crm() as c:
            await c.update("orders", order["Id"], {"Name": "metrics move"})
    run(edit())
    wait_for(lambda: value("talkstream_polls_total") > polls and value('talkstream_writes_total{') > writes_ok,
             timeout=30, message="counters move")


def test_example_consumer_mirrors_all_orders(p, tmp_path):
    spec = importlib.util.spec_from_file_location("sqlite_mirror", ROOT / "examples" / "sqlite_mirror.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    db_path = tmp_path / "orders.db"
    stop_flag = {"loop": None, "stop": None}

    def consumer() -> None:
        async def go():
            stop_flag["loop"] = asyncio.get_running_loop()
            stop_flag["stop"] = asyncio.Event()
            await module.mirror(p.broker.bootstrap, str(db_path), group="test-mirror", stop=stop_flag["stop"])
        asyncio.run(go())

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    try:
        def mirrored():
            if not db_path.exists():
                return False
            try:
                with sqlite3.connect(db_path) as db:
                    rows = {(s, i): (n, d) for s, i, n, d in db.execute(
                        "SELECT system, id, name, deleted FROM orders")}
            except sqlite3.OperationalError:  # the file is there, its table not yet (the mirror is starting)
                return False
            crm = {("customcrm", o["Id"]): (o["Name"], int(o["Deleted"])) for o in run(crm_all(p, "orders"))}
            erp = {("businessnxt", str(o["orderNo"])): (o["name"], 0) for o in run(bnxt_all(p, "order"))}
            return all(rows.get(k) == v for k, v in {**crm, **erp}.items())
        wait_for(mirrored, timeout=60, message="mirror matches both systems")
    finally:
        if stop_flag["loop"]:
            stop_flag["loop"].call_soon_threadsafe(stop_flag["stop"].set)
        thread.join(15)


def test_status_reports_what_the_link_state_takes_in_memory(p):
    """``/status?memory=1`` walks the link state (what ``make bench`` reports per link): it counts
    at least the link documents as held in memory (settled ones shrunk), and every link."""
    memory = httpx.get(f"http://127.0.0.1:{p.web_port}/status", params={"memory": 1}, timeout=30).json()[
        "state_memory"]
    changelog = run(read_all(p.broker.bootstrap, f"{p.app_id}-links-changelog", timeout=60))
    latest = {key: value for _p, _o, key, value in changelog}
    stored = [value for value in latest.values() if value]
    assert memory["links"] == SEED * 2 + SEED // 10
    assert memory["table_entries"] == len(stored)
    assert memory["store"] == p.store
    if p.store.startswith("rocksdb"):  # the links are on disk: none held in memory, none shrunk
        assert memory["parts"]["links"] == memory["parts"]["routes"] == sys.getsizeof({})
        return
    zdict = linkcodec.mapping_dictionary(load_mapping())
    held = sum(min(len(value), len(linkcodec.shrink(value, zdict))) for value in stored)
    assert held < memory["parts"]["links"] < 3 * sum(map(len, stored))

    def shrunk() -> bool:  # settled links are held shrunk within two looks (every 10 s)
        parts = httpx.get(f"http://127.0.0.1:{p.web_port}/status", params={"memory": 1},
                          timeout=30).json()["state_memory"]["parts"]
        return parts["links"] < 0.6 * sum(map(len, stored))
    wait_for(shrunk, timeout=60, message="the settled links held shrunk in memory")
    assert set(memory["parts"]) == {"links", "routes", "summaries", "wakeups", "product_refs"}
    assert memory["bytes"] == sum(memory["parts"].values())
    assert "state_memory" not in worker_status(p)  # the walk only when asked
