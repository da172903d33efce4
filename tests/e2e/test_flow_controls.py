"""Flow controls end to end: pause and resume (also with a worker killed while paused), and
the circuit breaker on write volume.

Writes are counted per record: Business NXT's sandbox counts the writes of each order row
(``/_sandbox/row-writes/order``), and a Customcrm record's ``Version`` grows by one per change.
"""
from __future__ import annotations

import json

import httpx
import orjson
import pytest

from connectors.common.kafka import read_all
from streams import linkcodec
from tests.e2e.harness import (Pipeline, bnxt_all, bnxt_update, crm_all, crm_update, metric, run, settle, stamped,
                               wait_for, wait_in_sync)

pytestmark = pytest.mark.e2e


def row_writes(p: Pipeline) -> dict[str, int]:
    return {str(k): v for k, v in httpx.get(f"{p.bnxt_base}/_sandbox/row-writes/order").json().items()}


def crm_versions(p: Pipeline) -> dict[str, int]:
    return {o["Id"]: o["Version"] for o in run(crm_all(p, "orders"))}


def order_rows(p: Pipeline) -> dict[str, dict]:
    """Customcrm order Id -> its Business NXT order row."""
    return {crm_id: rows[0] for crm_id, rows in stamped(run(bnxt_all(p, "order")), "customcrm:order:").items()}


def states(p: Pipeline) -> dict[str, dict]:
    return json.loads(p.cli("flows", "--json").stdout)


def links(p: Pipeline) -> dict[str, dict]:
    """The latest state of every link, read from the links changelog."""
    latest = {}
    for _p, _o, key, value in run(read_all(p.broker.bootstrap, f"{p.app_id}-links-changelog", timeout=60)):
        if key is not None and value:
            k = orjson.loads(key)
            latest[k] = linkcodec.unpack(k, value)
    return latest


def crm_edit(p: Pipeline, order_id: str, name: str) -> None:
    crm_update(p, "orders", order_id, {"Name": name})


def bnxt_edit(p: Pipeline, order_no: int, name: str) -> None:
    bnxt_update(p, "order", "orderNo", order_no, {"name": name})


def worker_obeys(p: Pipeline, state: str) -> None:
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{p.web_port}/status", timeout=5).json()["controls"]
             ["order-order"]["state"] == state, timeout=30, message=f"the worker sees order-order {state}")


@pytest.mark.parametrize("kill", [False, True], ids=["paused", "killed-while-paused"])
def test_a_paused_flow_writes_nothing_and_on_resume_each_edited_order_gets_one_write(pipeline_factory, kill):
    p = pipeline_factory(seed=30)
    p.start_worker()
    wait_in_sync(p, timeout=120)
    orders = sorted(run(crm_all(p, "orders")), key=lambda o: o["Id"])
    crm_side, bnxt_side = [o["Id"] for o in orders[:20]], [o["Id"] for o in orders[20:25]]
    rows = order_rows(p)
    settle(p)
    writes0, versions0 = row_writes(p), crm_versions(p)

    assert "paused" in p.cli("flows", "pause", "order-order").stdout
    worker_obeys(p, "paused")
    assert states(p)["order-order"]["state"] == "paused"
    expected: dict[str, str] = {}
    for i, order_id in enumerate(crm_side):
        for round_ in range(3 if i < 3 else 1):  # three of them several times
            expected[order_id] = f"paused edit {round_} of {order_id}"
            crm_edit(p, order_id, expected[order_id])
            if round_ < 2 and i < 3:  # the next edit only after this one was read (a new version each)
                wait_for(lambda: links(p).get(f"order-order:{order_id}", {}).get("base", {}).get("Name", [None])[0]
                         == expected[order_id], timeout=30, message="edit read while paused")
    for order_id in bnxt_side:
        expected[order_id] = f"paused ERP edit of {order_id}"
        bnxt_edit(p, rows[order_id]["orderNo"], expected[order_id])

    def decided_and_held() -> bool:  # read and decided while paused: the link state keeps up
        state = links(p)
        return all(state[f"order-order:{i}"]["base"]["Name"][0] == name and state[f"order-order:{i}"].get("held")
                   for i, name in expected.items())
    wait_for(decided_and_held, timeout=60, message="every edit decided and held")
    if kill:
        p.worker.kill9()
        p.start_worker()
        worker_obeys(p, "paused")
    settle(p, quiet=3.0)
    writes1, versions1 = row_writes(p), crm_versions(p)
    for order_id in crm_side:  # nothing reached Business NXT
        assert writes1.get(str(rows[order_id]["orderNo"]), 0) == writes0.get(str(rows[order_id]["orderNo"]), 0)
    for order_id in bnxt_side:  # nothing reached Customcrm
        assert versions1[order_id] == versions0[order_id]

    assert "running" in p.cli("flows", "resume", "order-order").stdout
    wait_in_sync(p, timeout=60)
    settle(p, quiet=4.0)
    writes2, versions2 = row_writes(p), crm_versions(p)
    for order_id in crm_side:  # one write each, the latest value; none back
        no = str(rows[order_id]["orderNo"])
        assert writes2[no] - writes1.get(no, 0) == 1, order_id
        assert versions2[order_id] == versions1[order_id], order_id
    for order_id in bnxt_side:
        no = str(rows[order_id]["orderNo"])
        assert versions2[order_id] - versions1[order_id] == 1, order_id
        assert writes2[no] == writes1[no], order_id
    final = order_rows(p)
    assert all(final[i]["name"] == name for i, name in expected.items())
    assert states(p)["order-order"]["state"] == "running"


def test_the_breaker_trips_past_its_limit_and_resume_brings_the_rest(pipeline_factory):
    seed = 200
    p = pipeline_factory(seed=seed, env_extra={"TALKSTREAM_BREAKER_MAX_WRITES": "10",
                                               "TALKSTREAM_BREAKER_WINDOW": "300"})
    p.start_worker()
    wait_in_sync(p, timeout=180)  # an initial load of 200 new orders: creates do not count
    assert states(p)["order-order"]["state"] == "running"
    rows = order_rows(p)
    edited = sorted(rows)[:50]
    settle(p)
    writes0 = row_writes(p)
    for order_id in edited:
        crm_edit(p, order_id, f"mass edit of {order_id}")
    wait_for(lambda: states(p)["order-order"]["state"] == "tripped", timeout=60, message="the breaker tripped")
    worker_obeys(p, "tripped")
    control = states(p)["order-order"]
    assert control["reason"] == "breaker" and control["detail"]["system"] == "businessnxt"
    assert control["detail"]["max"] == 10 and "breaker" in control["why"]
    assert metric(p, 'talkstream_flow_tripped{flow="order-order"}') == 1.0
    assert "ERROR" in p.worker.output() and "tripped" in p.worker.output()
    settle(p, quiet=3.0)

    def updated() -> int:
        now = row_writes(p)
        return sum(now[str(rows[i]["orderNo"])] - writes0[str(rows[i]["orderNo"])] for i in edited)
    assert updated() <= 10
    status = json.loads(p.cli("status", "--json").stdout)
    assert status["flows"]["order-order"]["state"] == "tripped"

    p.cli("flows", "resume", "order-order")
    wait_for(lambda: all(r["name"] == f"mass edit of {i}" for i, r in order_rows(p).items() if i in edited),
             timeout=60, message="the other 40 arrive")
    settle(p)
    assert updated() == 50  # each edited order written exactly once
    assert states(p)["order-order"]["state"] == "running"
    assert metric(p, 'talkstream_flow_tripped{flow="order-order"}') == 0.0
