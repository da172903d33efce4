"""The sandbox store's changedTimestamp index: a read narrowed by it returns exactly what a
scan of every row returns, after creates, updates and deletes."""
from __future__ import annotations

import random

from connectors.businessnxt import filters as F
from connectors.businessnxt.sandbox_store import Store
from connectors.businessnxt.schema import TABLES

TS = "changedTimestamp"


def scanned(store: Store, table: str, flt: dict) -> list:
    """The filter applied to every row, as a store without the index would."""
    pred = F.compile_filter(flt, TABLES[table].fields)
    key = TABLES[table].key
    return sorted((r for r in store.rows[table].values() if pred(r)), key=lambda r: tuple(r[k] for k in key))


def selected(store: Store, table: str, flt: dict) -> list:
    key = TABLES[table].key
    return sorted(store.select(table, flt), key=lambda r: tuple(r[k] for k in key))


def test_reads_by_change_time_match_a_full_scan_after_creates_updates_and_deletes():
    rng = random.Random(7)
    store = Store()
    store.seed(60)  # with legacy rows without timestamps
    stamps: list[str] = []
    for round_ in range(30):
        store.create("product", [{"productNo": f"N{round_}-{i}", "description": "new"} for i in range(3)])
        store.create("order", [{"customerNo": 10001, "name": f"o{round_}",
                                "orderLines": [{"productNo": "P00001", "quantity": 1.0}]}])
        victim = rng.choice(sorted(store.rows["product"]))
        store.update("product", filter={"productNo": {"_eq": victim}}, value={"description": f"r{round_}"})
        order_no = rng.choice(sorted(store.rows["order"]))
        store.update("orderLine", filter={"orderNo": {"_eq": order_no}}, value={"quantity": 2.0})
        if round_ % 5 == 4:
            store.delete("order", {"orderNo": {"_eq": rng.choice(sorted(store.rows["order"]))}})
        stamps += [r[TS] for t in ("product", "order", "orderLine") for r in store.rows[t].values() if r[TS]]
    bounds = sorted(set(stamps))
    for since in [bounds[0], bounds[len(bounds) // 2], bounds[-5], bounds[-1], "2099-01-01T00:00:00.0000000"]:
        for table in ("product", "order", "orderLine"):
            for flt in ({TS: {"_gte": since}}, {TS: {"_gt": since}},
                        {"_and": [{TS: {"_gte": since}}, {"_or": [{TS: {"_gt": since}}]}]}):
                assert selected(store, table, flt) == scanned(store, table, flt), (table, flt)
    # the index holds each row with a timestamp once, at its current timestamp
    for table in ("product", "order", "orderLine"):
        key = TABLES[table].key
        expected = sorted((r[TS], r[key[0]] if len(key) == 1 else tuple(r[k] for k in key))
                          for r in store.rows[table].values() if r[TS] is not None)
        assert store.by_changed[table] == expected
