"""The QA checklist of the "Customcrm to Businessnxt Dataflow", sentence by sentence,
for each flow, plus echo and conflict behaviour (invariants 2, 3 and 4).

One pipeline per engine serves the module (the embedded broker with in-memory tables, and
Apache Kafka with RocksDB tables); each test edits its own records.
"""
from __future__ import annotations

import time

import pytest

from streams.mapping import load_mapping
from tests.e2e.harness import (Pipeline, bnxt_all, bnxt_update, crm_all, crm_create, crm_update, run, settle, stamped,
                               wait_for, writes)

pytestmark = pytest.mark.e2e

MAPPING = load_mapping()
SEED = 12


#: The checklist runs on the embedded broker with in-memory tables, and on the production
#: engine: Apache Kafka with RocksDB tables.
ENGINES = [pytest.param(("embedded", "memory://"), id="embedded"),
           pytest.param(("kafka", "rocksdb://"), id="kafka-rocksdb", marks=pytest.mark.kafka)]


@pytest.fixture(scope="module", params=ENGINES)
def p(request, tmp_path_factory):
    broker_kind, store = request.param
    pipe = Pipeline(tmp_path_factory.mktemp("checklist"), seed=SEED, bnxt_seed=3, broker_kind=broker_kind,
                    store=store, env_extra={"TALKSTREAM_POLL_INTERVAL": "0.5"})
    try:
        pipe.start()
        pipe.start_worker()
        wait_for(lambda: pipe.bnxt_stats()["rows"]["order"] >= SEED + SEED // 10 + 3, timeout=120,
                 message="initial sync")
        yield pipe
    finally:
        pipe.stop()


# ------------------------------------------------------------------ helpers


def crm_get(p, resource, id):
    async def go():
        async with p.crm() as c:
            return await c.get(resource, id)
    return run(go())


def bnxt_row(p, table, key_field, key):
    async def go():
        async with p.bnxt() as b:
            rows = await b.read(table, filter={key_field: {"_eq": key}})
            return rows[0] if rows else None
    return run(go())


def target_order(p, prefix, crm_id):
    rows = stamped(run(bnxt_all(p, "order")), prefix).get(crm_id, [])
    assert len(rows) <= 1, f"{len(rows)} Businessnxt orders for {crm_id}"
    return rows[0] if rows else None


def wait_target_order(p, prefix, crm_id, check, message):
    def ok():
        row = target_order(p, prefix, crm_id)
        return row is not None and check(row)
    wait_for(ok, timeout=30, message=message)
    return target_order(p, prefix, crm_id)


def first(p, resource):
    return sorted(run(crm_all(p, resource)), key=lambda r: r["Id"])


# ------------------------------------------------------------------ Order -> Order


def test_every_customcrm_order_has_exactly_one_businessnxt_order(p):
    orders = run(crm_all(p, "orders"))
    rows = stamped(run(bnxt_all(p, "order")), "customcrm:order:")
    assert {o["Id"] for o in orders} == set(rows)
    assert all(len(v) == 1 for v in rows.values())


ORDER_EDITS_CRM = [
    ("Name", "Renamed in CRM", "name", "Renamed in CRM"),
    ("OrderDate", "2026-12-24", "orderDate", 20261224),
    ("DueDate", "2027-01-15", "dueDate", 20270115),
    ("CustomerNo", 10042, "customerNo", 10042),
    ("YourReference", "PO-CRM", "yourReference", "PO-CRM"),
    ("Discount", "12.50", "totalDiscountAmountInCurrency", 12.5),
]


@pytest.mark.parametrize("prop,value,field,expected", ORDER_EDITS_CRM, ids=[e[0] for e in ORDER_EDITS_CRM])
def test_order_property_edited_in_customcrm_reaches_businessnxt(p, prop, value, field, expected):
    order = first(p, "orders")[0]
    crm_update(p, "orders", order["Id"], {prop: value})
    wait_target_order(p, "customcrm:order:", order["Id"], lambda r: r[field] == expected,
                      f"{prop} -> {field}")


ORDER_EDITS_BNXT = [
    ("name", "Renamed in ERP", "Name", "Renamed in ERP"),
    ("orderDate", 20261130, "OrderDate", "2026-11-30"),
    ("dueDate", 20261231, "DueDate", "2026-12-31"),
    ("customerNo", 10007, "CustomerNo", 10007),
    ("yourReference", "PO-ERP", "YourReference", "PO-ERP"),
    ("totalDiscountAmountInCurrency", 3.25, "Discount", "3.25"),
]


@pytest.mark.parametrize("field,value,prop,expected", ORDER_EDITS_BNXT, ids=[e[0] for e in ORDER_EDITS_BNXT])
def test_order_property_edited_in_businessnxt_reaches_customcrm(p, field, value, prop, expected):
    order = first(p, "orders")[1]
    row = target_order(p, "customcrm:order:", order["Id"])
    bnxt_update(p, "order", "orderNo", row["orderNo"], {field: value})

    def ok():
        got = crm_get(p, "orders", order["Id"])[prop]
        return got == expected or (prop == "Discount" and float(got) == float(expected))
    wait_for(ok, timeout=30, message=f"{field} -> {prop}")


def test_order_lines_sync_both_ways(p):
    orders = first(p, "orders")
    order = orders[2]
    products = first(p, "products")
    lines = [{"LineNo": 1, "ProductId": products[0]["Id"], "Quantity": "3", "UnitPrice": "9.90", "Description": "a"},
             {"LineNo": 2, "ProductId": products[1]["Id"], "Quantity": "1.5", "UnitPrice": "100", "Description": None}]
    crm_update(p, "orders", order["Id"], {"Lines": lines})

    def lines_of(row):
        return sorted((l["lineNo"], l["productNo"], float(l["quantity"]), float(l["priceInCurrency"]),
                       l["description"] or None) for l in row["orderLines"])
    expected = [(1, products[0]["Sku"], 3.0, 9.9, "a"), (2, products[1]["Sku"], 1.5, 100.0, None)]
    row = wait_target_order(p, "customcrm:order:", order["Id"], lambda r: lines_of(r) == expected,
                            "lines reach Businessnxt")
    # edit a line in the ERP: the quantity comes back to the CRM line
    async def edit():
        async with p.bnxt() as b:
            await b.update("orderLine", [{"_and": [{"orderNo": {"_eq": row["orderNo"]}}, {"lineNo": {"_eq": 2}}]}],
                           [{"quantity": 7}])
    run(edit())

    def back():
        got = crm_get(p, "orders", order["Id"])["Lines"]
        return [float(l["Quantity"]) for l in sorted(got, key=lambda l: l["LineNo"])] == [3.0, 7.0]
    wait_for(back, timeout=30, message="line edit reaches Customcrm")


# ------------------------------------------------------------------ Product -> Product


def test_every_customcrm_product_has_exactly_one_businessnxt_product(p):
    products = run(crm_all(p, "products"))
    rows = run(bnxt_all(p, "product"))
    for prd in products:
        assert sum(1 for r in rows if r["productNo"] == prd["Sku"]) == 1


PRODUCT_EDITS = [
    ("Name", "New name", "description", "New name"),
    ("Description", "Long text", "information1", "Long text"),
    ("Price", "249.00", "priceQuantity", 249.0),
    ("StockQuantity", "17", "quantityPerUnit", 17.0),
    ("Url", "https://example.com/p", "webPage", "https://example.com/p"),
]


@pytest.mark.parametrize("prop,value,field,expected", PRODUCT_EDITS, ids=[e[0] for e in PRODUCT_EDITS])
def test_product_property_syncs_both_ways(p, prop, value, field, expected):
    product = first(p, "products")[3]
    crm_update(p, "products", product["Id"], {prop: value})
    wait_for(lambda: (bnxt_row(p, "product", "productNo", product["Sku"]) or {}).get(field) == expected,
             timeout=30, message=f"{prop} -> {field}")
    back_value = {"description": "ERP name", "information1": "ERP text", "priceQuantity": 1.5,
                  "quantityPerUnit": 2, "webPage": "https://erp.example/p"}[field]
    bnxt_update(p, "product", "productNo", product["Sku"], {field: back_value})

    def ok():
        got = crm_get(p, "products", product["Id"])[prop]
        return got == back_value or (isinstance(back_value, (int, float)) and float(got) == float(back_value))
    wait_for(ok, timeout=30, message=f"{field} -> {prop}")


def test_product_sku_is_create_only(p):
    product = first(p, "products")[4]
    crm_update(p, "products", product["Id"], {"Sku": product["Sku"] + "-X"})
    # after the next sync round the Businessnxt key is unchanged and no product was added
    crm_update(p, "products", product["Id"], {"Name": "after sku change"})
    wait_for(lambda: (bnxt_row(p, "product", "productNo", product["Sku"]) or {}).get("description")
             == "after sku change", timeout=30, message="link kept after Sku change")
    assert bnxt_row(p, "product", "productNo", product["Sku"] + "-X") is None


def test_existing_businessnxt_product_is_linked_not_duplicated(p):
    async def erp_product():
        async with p.bnxt() as b:
            await b.create("product", [{"productNo": "MATCH-1", "description": "Existing in ERP",
                                        "priceQuantity": 5}])
    run(erp_product())
    crm_create(p, "products", {"Sku": "MATCH-1", "Name": "Matched product", "Price": "5.00"})
    wait_for(lambda: (bnxt_row(p, "product", "productNo", "MATCH-1") or {}).get("description")
             == "Matched product", timeout=30, message="match linked and updated")
    assert sum(1 for r in run(bnxt_all(p, "product")) if r["productNo"] == "MATCH-1") == 1


# ------------------------------------------------------------------ User -> Order


def test_every_customcrm_user_has_exactly_one_businessnxt_order(p):
    users = run(crm_all(p, "users"))
    rows = stamped(run(bnxt_all(p, "order")), "customcrm:user:")
    assert {u["Id"] for u in users} == set(rows) and all(len(v) == 1 for v in rows.values())
    for user in users:
        row = rows[user["Id"]][0]
        assert row["customerNo"] == 10000
        assert row["orderDate"] == int(user["CreatedAt"][:10].replace("-", ""))


USER_EDITS = [("FullName", "Grace Hopper", "name"), ("Email", "grace@example.com", "yourReference"),
              ("Title", "Rear Admiral", "ourReference")]


@pytest.mark.parametrize("prop,value,field", USER_EDITS, ids=[e[0] for e in USER_EDITS])
def test_user_property_syncs_both_ways(p, prop, value, field):
    user = first(p, "users")[0]
    crm_update(p, "users", user["Id"], {prop: value})
    row = wait_target_order(p, "customcrm:user:", user["Id"], lambda r: r[field] == value, f"{prop} -> {field}")
    back = {"name": "Ada Lovelace", "yourReference": "ada@example.com", "ourReference": "Countess"}[field]
    bnxt_update(p, "order", "orderNo", row["orderNo"], {field: back})
    wait_for(lambda: crm_get(p, "users", user["Id"])[prop] == back, timeout=30, message=f"{field} -> {prop}")


def test_user_create_only_properties_are_not_updated_later(p):
    user = first(p, "users")[0]
    row = target_order(p, "customcrm:user:", user["Id"])
    bnxt_update(p, "order", "orderNo", row["orderNo"], {"customerNo": 10055, "orderDate": 20200101})
    crm_update(p, "users", user["Id"], {"Title": "touched"})
    wait_target_order(p, "customcrm:user:", user["Id"], lambda r: r["ourReference"] == "touched", "edit synced")
    row = target_order(p, "customcrm:user:", user["Id"])
    assert row["customerNo"] == 10055 and row["orderDate"] == 20200101  # never overwritten


# ------------------------------------------------------------------ echo and conflicts


@pytest.mark.parametrize("side", ["customcrm", "businessnxt"])
def test_one_edit_makes_exactly_one_write_and_none_back(p, side):
    order = first(p, "orders")[5]
    row = target_order(p, "customcrm:order:", order["Id"])
    settle(p)
    b0, c0 = p.bnxt_stats()["mutations"], writes(p.crm_stats())
    if side == "customcrm":
        crm_update(p, "orders", order["Id"], {"YourReference": "echo-test-crm"})
        wait_target_order(p, "customcrm:order:", order["Id"], lambda r: r["yourReference"] == "echo-test-crm", "sync")
    else:
        bnxt_update(p, "order", "orderNo", row["orderNo"], {"yourReference": "echo-test-erp"})
        wait_for(lambda: crm_get(p, "orders", order["Id"])["YourReference"] == "echo-test-erp", timeout=30)
    settle(p, quiet=4.0)  # several poll rounds: any echo would show up here
    b1, c1 = p.bnxt_stats()["mutations"], writes(p.crm_stats())
    # the person's edit itself counts on its own side
    if side == "customcrm":
        assert (c1 - c0, b1 - b0) == (1, 1)
    else:
        assert (b1 - b0, c1 - c0) == (1, 1)


def test_conflict_both_sides_edited_between_polls_converges(p):
    order = first(p, "orders")[6]
    row = target_order(p, "customcrm:order:", order["Id"])
    # different properties: each side's change wins
    crm_update(p, "orders", order["Id"], {"Name": "crm side"})
    bnxt_update(p, "order", "orderNo", row["orderNo"], {"yourReference": "erp side"})

    def both(crm_name, erp_ref):
        c = crm_get(p, "orders", order["Id"])
        r = target_order(p, "customcrm:order:", order["Id"])
        return (c["Name"], c["YourReference"], r["name"], r["yourReference"]) == (crm_name, erp_ref, crm_name, erp_ref)
    wait_for(lambda: both("crm side", "erp side"), timeout=30, message="different properties merged")
    # the same property: the later modification wins (here: the ERP edit, made after the CRM edit)
    crm_update(p, "orders", order["Id"], {"Name": "first (crm)"})
    time.sleep(0.05)  # a strictly later modification time on the ERP side; not a synchronisation
    bnxt_update(p, "order", "orderNo", row["orderNo"], {"name": "second (erp)"})
    wait_for(lambda: both("second (erp)", "erp side"), timeout=30, message="later edit wins on both sides")
    settle(p)
    assert both("second (erp)", "erp side")
