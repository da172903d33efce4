"""create_in_source end to end: with it on for ``order-order`` (a mapping file given with
TALKSTREAM_MAPPING_FILE), an order created in Business NXT appears once in Customcrm with its
lines and stays linked both ways, also when the worker is killed right after the Customcrm
create; with it off (the default), nothing is created."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from connectors.common.kafka import read_all
from tests.e2e.harness import (Pipeline, bnxt_all, bnxt_update, crm_all, crm_update, run, settle, stamped, wait_for,
                               wait_in_sync)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAME = "Made in Business NXT"


def mapping_creating_in_source(tmp: Path) -> Path:
    data = json.loads((ROOT / "schemas" / "mapping.json").read_text())
    next(f for f in data["flows"] if f["id"] == "order-order")["create_in_source"] = True
    path = tmp / "mapping.json"
    path.write_text(json.dumps(data))
    return path


def create_erp_order(p: Pipeline, product_no: str) -> int:
    """A person creates an order in Business NXT (no origin stamp), with one line."""
    async def go():
        async with p.bnxt() as b:
            return await b.create("order", [{"name": NAME, "customerNo": 10004, "orderDate": 20261203,
                                              "orderLines": [{"lineNo": 1, "productNo": product_no, "quantity": 3,
                                                              "priceInCurrency": 12.5}]}])
    (row,) = run(go())
    return row["orderNo"]


def crm_made(p: Pipeline) -> list[dict]:
    return [o for o in run(crm_all(p, "orders")) if o["Name"] == NAME or o["Name"].startswith("edited: ")]


@pytest.mark.parametrize("kill", [False, True], ids=["on", "on-killed-after-the-create"])
def test_an_order_created_in_business_nxt_appears_once_in_customcrm_and_stays_linked(pipeline_factory, tmp_path,
                                                                                       kill):
    p = pipeline_factory(seed=5, env_extra={"TALKSTREAM_MAPPING_FILE": str(mapping_creating_in_source(tmp_path))})
    p.start_worker()
    wait_in_sync(p, timeout=120)
    products = {prd["Id"]: prd["Sku"] for prd in run(crm_all(p, "products"))}
    product_id, sku = sorted(products.items())[0]
    order_no = create_erp_order(p, sku)
    wait_for(lambda: crm_made(p), timeout=60, message="the Customcrm order created")
    if kill:
        p.worker.kill9()  # right after the Customcrm create: its result and the stamp may be lost
        p.start_worker()

    def stamped_once() -> bool:
        made = crm_made(p)
        rows = stamped(run(bnxt_all(p, "order")), "customcrm:order:")
        return len(made) == 1 and [r["orderNo"] for r in rows.get(made[0]["Id"], [])] == [order_no]
    try:
        wait_for(stamped_once, timeout=90, message="the Business NXT order stamped with its Customcrm order")
    except AssertionError as exc:  # say what there is: Customcrm orders made, Business NXT orders stamped
        made = crm_made(p)
        rows = stamped(run(bnxt_all(p, "order")), "customcrm:order:")
        raise AssertionError(f"{exc}\nmade in Customcrm: {[o['Id'] for o in made]}\nstamped: "
                             f"{ {m['Id']: [r['orderNo'] for r in rows.get(m['Id'], [])] for m in made} }\n"
                             f"dead letters: {p.cli('deadletters', 'list', '--json').stdout[:2000]}") from exc
    (order,) = crm_made(p)
    assert order["CustomerNo"] == 10004 and order["OrderDate"] == "2026-12-03"
    assert [(ln["ProductId"], float(ln["Quantity"]), float(ln["UnitPrice"])) for ln in order["Lines"]] == [
        (product_id, 3.0, 12.5)]
    # linked both ways, like any other order
    crm_update(p, "orders", order["Id"], {"Name": "edited: in Customcrm"})
    wait_for(lambda: stamped(run(bnxt_all(p, "order")), "customcrm:order:")[order["Id"]][0]["name"]
             == "edited: in Customcrm", timeout=30, message="a Customcrm edit reaches Business NXT")
    bnxt_update(p, "order", "orderNo", order_no, {"yourReference": "edited in ERP"})
    wait_for(lambda: next(o for o in run(crm_all(p, "orders")) if o["Id"] == order["Id"])["YourReference"]
             == "edited in ERP", timeout=30, message="a Business NXT edit reaches Customcrm")
    wait_in_sync(p, timeout=60)
    settle(p)
    assert len(crm_made(p)) == 1
    rows = stamped(run(bnxt_all(p, "order")), "customcrm:order:")
    assert all(len(v) == 1 for v in rows.values())  # no second Business NXT order for any Customcrm order
    assert p.bnxt_stats()["rows"]["order"] == 5 + 5 // 10 + 1


def test_with_create_in_source_off_a_business_nxt_order_is_not_copied(pipeline_factory):
    p = pipeline_factory(seed=5)
    p.start_worker()
    wait_in_sync(p, timeout=120)
    before = len(run(crm_all(p, "orders")))
    sku = run(crm_all(p, "products"))[0]["Sku"]
    order_no = create_erp_order(p, sku)
    wait_for(lambda: any(key == str(order_no).encode() for _p, _o, key, _v in
                         run(read_all(p.broker.bootstrap, "businessnxt.order.changes"))),
             timeout=30, message="the Business NXT order polled")
    settle(p, quiet=3.0)
    assert len(run(crm_all(p, "orders"))) == before and crm_made(p) == []
