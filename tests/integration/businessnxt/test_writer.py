"""BusinessnxtWriter against the real sandbox, with injected faults."""
from __future__ import annotations

import pytest

from connectors.businessnxt.writer import BusinessnxtWriter
from schemas.command import WriteCommand

from .conftest import closing

pytestmark = pytest.mark.integration


def cmd(i: int, op: str = "create", entity: str = "order", **kw) -> WriteCommand:
    base = dict(command_id=f"c{i}-{op}", flow="order-order", link_key=f"ord_{i:06d}", system="businessnxt",
                entity=entity, op=op)
    base.update(kw)
    return WriteCommand(**base)


def order_create(i: int) -> WriteCommand:
    return cmd(i, idempotency_key=f"customcrm:order:ord_{i:06d}", origin_field="information1",
               data={"customerNo": 10000 + i % 100, "name": f"Order {i}", "orderDate": 20261125,
                     "orderLines": [{"lineNo": 1, "productNo": f"P0000{i % 5 + 1}", "quantity": "1.5"}]})


async def test_1000_creates_with_faults_make_exactly_1000_orders(sandbox_factory):
    sb = sandbox_factory(seed=5)
    commands = [order_create(i) for i in range(1000)]
    faults = [dict(error_rate=0.3, status=500), dict(error_rate=0.3, status=429),
              dict(timeout_rate=0.3, hang_seconds=0.6)]
    results = {}
    async with closing(sb.client(timeout=0.4, max_attempts=6, backoff_initial=0.01, backoff_max=0.05)) as c:
        writer = BusinessnxtWriter(c, chunk_size=50)
        todo = commands
        for sink_round in range(30):  # what a sink does: re-apply what is not done yet
            if not todo:
                break
            for k in range(0, len(todo), 100):
                sb.faults(**faults[(sink_round + k // 100) % 3])
                batch = todo[k:k + 100]
                for c_, r in zip(batch, await writer.apply(batch)):
                    assert r.command_id == c_.command_id
                    assert r.status in ("ok", "retryable"), r.error
                    if r.status == "ok":
                        results[c_.command_id] = r
            todo = [c_ for c_ in commands if c_.command_id not in results]
        sb.clear_faults()
        assert not todo, f"{len(todo)} commands never succeeded"
        stored = await c.read_all("order", filter={"information1": {"_like": "customcrm:order:%"}}, page_size=2000)
    stats = sb.stats()["requests"]["POST /api/graphql-service"]
    assert stats.get("500", 0) > 0 and stats.get("429", 0) > 0 and stats.get("599", 0) > 0, stats
    assert len(stored) == 1000
    stamps = {o["information1"]: o for o in stored}
    assert set(stamps) == {c_.idempotency_key for c_ in commands}
    for c_ in commands:
        r = results[c_.command_id]
        row = stamps[c_.idempotency_key]
        assert r.target_id == str(row["orderNo"]) and r.version and not r.matched
        assert [ln["productNo"] for ln in row["orderLines"]] == [c_.data["orderLines"][0]["productNo"]]
    assert sb.state.store.count("order") == 1005


async def test_update_converges_lines_and_reports_version(sandbox):
    async with closing(sandbox.client()) as c:
        w = BusinessnxtWriter(c)
        [created] = await w.apply([order_create(1)])
        assert created.status == "ok" and len(created.record["orderLines"]) == 1
        oid = created.target_id
        data = {"name": "Renamed", "customerNo": 10001,
                "orderLines": [{"lineNo": 1, "productNo": "P00002", "quantity": 3},
                               {"productNo": "P00003", "quantity": 1}]}
        [upd] = await w.apply([cmd(1, op="update", target_id=oid, data=data)])
        assert upd.status == "ok", upd.error
        assert upd.version > created.version
        assert upd.record["name"] == "Renamed"
        assert [(ln["lineNo"], ln["productNo"], ln["quantity"]) for ln in upd.record["orderLines"]] == \
            [(1, "P00002", 3.0), (2, "P00003", 1.0)]
        # same desired state again: nothing to write, same version
        [again] = await w.apply([cmd(1, op="update", target_id=oid, data=data)])
        assert again.status == "ok" and again.version == upd.version
        # drop a line
        data2 = {**data, "orderLines": [{"lineNo": 2, "productNo": "P00003", "quantity": 1}]}
        [upd2] = await w.apply([cmd(1, op="update", target_id=oid, data=data2)])
        assert [ln["lineNo"] for ln in upd2.record["orderLines"]] == [2]
        assert upd2.version > upd.version  # a removed line still gives the order a new version
        [missing] = await w.apply([cmd(2, op="update", target_id="99999", data={"name": "x"})])
        assert missing.status == "not_found"
        [gone] = await w.apply([cmd(1, op="delete", target_id=oid)])
        assert gone.status == "ok"
        assert await c.read_by_keys("order", [int(oid)]) == {}


async def test_batch_with_bad_rows_and_matches(sandbox):
    async with closing(sandbox.client()) as c:
        w = BusinessnxtWriter(c, chunk_size=10)
        cmds = []
        for i in range(10):
            data = {"productNo": f"NEW-{i}", "description": f"d{i}"}
            kw = dict(entity="product", idempotency_key=f"customcrm:product:p{i}", origin_field="information1",
                      match={"productNo": data["productNo"]}, data=data)
            cmds.append(cmd(i, **kw))
        # an existing product: linked, not created
        cmds[3] = cmd(3, entity="product", match={"productNo": "P00004"}, idempotency_key="customcrm:product:p3",
                      origin_field="information1", data={"productNo": "P00004"})
        # a bad order (unknown customer) among good ones
        orders = [order_create(100 + i) for i in range(6)]
        orders[4] = cmd(104, idempotency_key="customcrm:order:bad", origin_field="information1",
                        data={"customerNo": 5, "name": "bad"})
        res = await w.apply(cmds + orders)
        assert [r.status for r in res] == ["ok"] * 14 + ["permanent", "ok"]
        assert res[3].matched and res[3].target_id == "P00004"
        assert not any(r.matched for i, r in enumerate(res[:10]) if i != 3)
        assert "customer 5 does not exist" in res[14].error
        assert sandbox.state.store.count("product") == 20 + 9
        assert sandbox.state.store.count("order") == 20 + 5
        # re-applying the same creates (e.g. after a crash before the ack) creates nothing new
        res2 = await w.apply(cmds + orders)
        assert [r.target_id for r in res2] == [r.target_id for r in res]
        assert sandbox.state.store.count("order") == 25 and sandbox.state.store.count("product") == 29


async def test_the_same_create_twice_in_one_batch_makes_one_record(sandbox_factory):
    """A re-sent create beside its original (after a crash) must not make a second order."""
    sb = sandbox_factory(seed=5)
    twice = [order_create(9), order_create(9).model_copy(update={"command_id": "c9-create-again"})]
    async with closing(sb.client()) as client:
        first, second = await BusinessnxtWriter(client).apply(twice)
        assert first.status == second.status == "ok" and first.target_id == second.target_id
        assert second.command_id == "c9-create-again"
        rows = await client.read_all("order", filter={"information1": {"_eq": "customcrm:order:ord_000009"}})
        assert len(rows) == 1
