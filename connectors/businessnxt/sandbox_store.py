"""In-memory tables of the Businessnxt sandbox: rows indexed by primary key,
atomic create / update / delete with server rules (suggested keys, customer
and product checks, non-updatable keys), server-local timestamps, seeding,
and a change feed (one ``TableChange`` per committed row change, in commit
order) for the webhook dispatcher.

No I/O here; the GraphQL layer (``sandbox.py``) calls these methods.
"""
from __future__ import annotations

import random
import threading
from bisect import bisect_left, insort
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from connectors.businessnxt import filters as F
from connectors.businessnxt.schema import ORDER, ORDER_LINE, PRODUCT, TABLES, Table
from connectors.businessnxt.timezones import format_local, utc_to_local

Row = dict[str, Any]
CUSTOMERS = frozenset(range(10000, 10100))
#: secondary hash indexes (table, field) kept for fast origin-stamp look-ups
SECONDARY = (("order", "information1"), ("product", "information1"))
#: every table is also indexed by changedTimestamp: a poll's ``changedTimestamp _gte`` read looks
#: at the rows changed since, not at every row
CHANGED = "changedTimestamp"


class StoreError(Exception):
    """A server-side rule rejected the request (becomes a GraphQL error)."""


@dataclass(frozen=True)
class TableChange:
    table: str
    event: str  # INSERT | UPDATE | DELETE
    keys: dict[str, Any]
    timestamp: datetime  # UTC commit time


def _pk(table: Table, row: Row) -> Any:
    if len(table.key) == 1:
        return row[table.key[0]]
    return tuple(row[k] for k in table.key)


def _num(v: Any) -> Any:
    if v is None or isinstance(v, float):
        return v
    return float(v)


class Store:
    """The sandbox's company database (one company)."""

    def __init__(self, *, tz: str = "Europe/Oslo", customers: Iterable[int] = CUSTOMERS) -> None:
        self.tz = tz
        self.customers = frozenset(customers)
        self.rows: dict[str, dict[Any, Row]] = {name: {} for name in TABLES}
        self.lines_by_order: dict[int, dict[int, Row]] = defaultdict(dict)
        self.secondary: dict[tuple[str, str], dict[Any, set]] = {s: defaultdict(set) for s in SECONDARY}
        #: per table, ``(changedTimestamp, primary key)`` of every row with a timestamp, sorted
        self.by_changed: dict[str, list[tuple[str, Any]]] = {name: [] for name in TABLES}
        self.lock = threading.RLock()
        self.listeners: list[Callable[[list[TableChange]], None]] = []
        self._clock = datetime(2000, 1, 1, tzinfo=timezone.utc)

    # ---- time -------------------------------------------------------------
    def _tick(self) -> datetime:
        """Strictly increasing UTC commit time (microsecond resolution)."""
        now = datetime.now(timezone.utc)
        if now <= self._clock:
            now = self._clock + timedelta(microseconds=1)
        self._clock = now
        return now

    def local(self, utc: datetime) -> str:
        return format_local(utc_to_local(utc, self.tz))

    # ---- indexes ----------------------------------------------------------
    def _index_add(self, tname: str, row: Row) -> None:
        if row.get(CHANGED) is not None:
            insort(self.by_changed[tname], (row[CHANGED], _pk(TABLES[tname], row)))
        for (t, f), idx in self.secondary.items():
            if t == tname and row.get(f) is not None:
                idx[row[f]].add(_pk(TABLES[t], row))

    def _index_remove(self, tname: str, row: Row) -> None:
        if row.get(CHANGED) is not None:
            by_changed, entry = self.by_changed[tname], (row[CHANGED], _pk(TABLES[tname], row))
            i = bisect_left(by_changed, entry)
            if i < len(by_changed) and by_changed[i] == entry:
                del by_changed[i]
        for (t, f), idx in self.secondary.items():
            if t == tname and row.get(f) is not None:
                s = idx.get(row[f])
                if s is not None:
                    s.discard(_pk(TABLES[t], row))
                    if not s:
                        del idx[row[f]]

    def _insert(self, tname: str, row: Row) -> None:
        t = TABLES[tname]
        self.rows[tname][_pk(t, row)] = row
        if tname == "orderLine":
            self.lines_by_order[row["orderNo"]][row["lineNo"]] = row
        self._index_add(tname, row)

    def _remove(self, tname: str, row: Row) -> None:
        t = TABLES[tname]
        self.rows[tname].pop(_pk(t, row), None)
        if tname == "orderLine":
            lines = self.lines_by_order.get(row["orderNo"])
            if lines is not None:
                lines.pop(row["lineNo"], None)
                if not lines:
                    del self.lines_by_order[row["orderNo"]]
        self._index_remove(tname, row)

    # ---- reads ------------------------------------------------------------
    def _candidates(self, tname: str, flt: dict | None, parent: int | None = None) -> Iterable[Row]:
        t = TABLES[tname]
        table = self.rows[tname]
        if tname == "orderLine":
            orders = {parent} if parent is not None else F.candidate_values(flt, "orderNo")
            if orders is not None:
                out: list[Row] = []
                lines = F.candidate_values(flt, "lineNo")
                for o in orders:
                    by_no = self.lines_by_order.get(o)
                    if not by_no:
                        continue
                    if lines is not None:
                        out.extend(by_no[n] for n in lines if n in by_no)
                    else:
                        out.extend(by_no.values())
                return out
            return self._changed_since(tname, flt)
        keys = F.candidate_values(flt, t.key[0])
        if keys is not None:
            return [table[k] for k in keys if k in table]
        for (st, f), idx in self.secondary.items():
            if st == tname:
                vals = F.candidate_values(flt, f)
                if vals is not None:
                    return [table[k] for v in vals for k in idx.get(v, ())]
        return self._changed_since(tname, flt)

    def _changed_since(self, tname: str, flt: dict | None) -> Iterable[Row]:
        """The rows changed at or after the filter's lower bound on changedTimestamp (every row
        when it sets none)."""
        table = self.rows[tname]
        since = F.lower_bound(flt, CHANGED, TABLES[tname].fields[CHANGED])
        if since is None:
            return table.values()
        by_changed = self.by_changed[tname]
        return [table[pk] for _ts, pk in by_changed[bisect_left(by_changed, (since,)):]]

    def select(self, tname: str, flt: dict | None, parent: int | None = None) -> list[Row]:
        pred = F.compile_filter(flt, TABLES[tname].fields)
        return [r for r in self._candidates(tname, flt, parent) if pred(r)]

    def query(self, tname: str, *, filter: dict | None = None, orderBy: list | None = None,
              first: int | None = None, after: str | None = None, last: int | None = None,
              before: str | None = None, skip: int | None = None, parent: int | None = None) -> dict:
        """A connection: ``{totalCount, pageInfo, items}``."""
        with self.lock:
            rows = self.select(tname, filter, parent)
            rows = F.sort_rows(rows, orderBy, TABLES[tname].key)
            start, end = F.page(len(rows), first=first, after=after, last=last, before=before, skip=skip)
            items = [dict(r) for r in rows[start:end]]
        return {
            "totalCount": len(rows),
            "pageInfo": {
                "hasNextPage": end < len(rows),
                "hasPreviousPage": start > 0,
                "startCursor": F.encode_cursor(start + 1) if end > start else None,
                "endCursor": F.encode_cursor(end) if end > start else None,
            },
            "items": items,
        }

    def count(self, tname: str) -> int:
        return len(self.rows[tname])

    # ---- validation -------------------------------------------------------
    def _check_values(self, t: Table, value: Row, where: str) -> Row:
        clean: Row = {}
        for f, v in value.items():
            if f == "orderLines":
                continue
            if f not in t.fields or t.fields[f] == "datetime":
                raise StoreError(f"{where}: field {f} cannot be set")
            clean[f] = _num(v) if t.fields[f] == "decimal" else v
        if t is ORDER and clean.get("customerNo") is not None and clean["customerNo"] not in self.customers:
            raise StoreError(f"{where}: customer {clean['customerNo']} does not exist")
        if t is ORDER_LINE and clean.get("productNo") is not None and clean["productNo"] not in self.rows["product"]:
            raise StoreError(f"{where}: product {clean['productNo']!r} does not exist")
        return clean

    def _new_row(self, t: Table, clean: Row, ts: str) -> Row:
        row = {f: None for f in t.fields}
        row.update(clean)
        row["createdTimestamp"] = ts
        row["changedTimestamp"] = ts
        return row

    # ---- mutations --------------------------------------------------------
    def _emit(self, changes: list[TableChange]) -> None:
        """Listeners run inside the store lock: they see changes in commit order."""
        if changes:
            for listener in self.listeners:
                listener(changes)

    def create(self, tname: str, values: list[Row]) -> list[Row]:
        """Insert every value or nothing; returns the new rows (orders with lines)."""
        t = TABLES[tname]
        with self.lock:
            utc = self._tick()
            ts = self.local(utc)
            planned: list[tuple[str, Row]] = []
            next_order = max(self.rows["order"], default=0) + 1
            taken: set = set()
            next_line: dict[int, int] = {}

            def line_no(order_no: int) -> int:
                if order_no not in next_line:
                    next_line[order_no] = max(self.lines_by_order.get(order_no, {0: None}), default=0) + 1
                n = next_line[order_no]
                next_line[order_no] = n + 1
                return n

            def plan_line(order_no: int, value: Row, where: str) -> None:
                clean = self._check_values(ORDER_LINE, value, where)
                clean["orderNo"] = order_no
                if clean.get("lineNo") is None:
                    clean["lineNo"] = line_no(order_no)
                else:
                    next_line[order_no] = max(next_line.get(order_no, 1), clean["lineNo"] + 1)
                pk = (order_no, clean["lineNo"])
                if pk in self.rows["orderLine"] or ("orderLine", pk) in taken:
                    raise StoreError(f"{where}: order line {order_no}/{clean['lineNo']} already exists")
                taken.add(("orderLine", pk))
                planned.append(("orderLine", self._new_row(ORDER_LINE, clean, ts)))

            for i, value in enumerate(values):
                where = f"values[{i}]"
                clean = self._check_values(t, value, where)
                if t is ORDER:
                    if clean.get("orderNo") is None:
                        while next_order in self.rows["order"] or ("order", next_order) in taken:
                            next_order += 1
                        clean["orderNo"] = next_order
                    if clean["orderNo"] in self.rows["order"] or ("order", clean["orderNo"]) in taken:
                        raise StoreError(f"{where}: order {clean['orderNo']} already exists")
                    taken.add(("order", clean["orderNo"]))
                    planned.append(("order", self._new_row(ORDER, clean, ts)))
                    for j, lv in enumerate(value.get("orderLines") or []):
                        plan_line(clean["orderNo"], lv, f"{where}.orderLines[{j}]")
                elif t is ORDER_LINE:
                    if clean.get("orderNo") not in self.rows["order"] and ("order", clean.get("orderNo")) not in taken:
                        raise StoreError(f"{where}: order {clean.get('orderNo')} does not exist")
                    plan_line(clean["orderNo"], {k: v for k, v in value.items() if k != "orderNo"}, where)
                else:
                    if not clean.get("productNo"):
                        raise StoreError(f"{where}: productNo is required")
                    if clean["productNo"] in self.rows["product"] or ("product", clean["productNo"]) in taken:
                        raise StoreError(f"{where}: product {clean['productNo']!r} already exists")
                    taken.add(("product", clean["productNo"]))
                    planned.append(("product", self._new_row(PRODUCT, clean, ts)))
            changes = []
            for tn, row in planned:
                self._insert(tn, row)
                changes.append(TableChange(tn, "INSERT", {k: row[k] for k in TABLES[tn].key}, utc))
            result = [dict(row) for tn, row in planned if tn == tname]
            self._emit(changes)
        return result

    def update(self, tname: str, *, filter: dict | None = None, value: Row | None = None,
               filters: list[dict] | None = None, values: list[Row] | None = None) -> list[Row]:
        """Apply ``value`` to every row matching ``filter``, or ``values[i]`` to ``filters[i]``."""
        t = TABLES[tname]
        if filters is not None or values is not None:
            if filter is not None or value is not None:
                raise StoreError("use either filter/value or filters/values")
            if filters is None or values is None or len(filters) != len(values):
                raise StoreError("filters and values must have the same length")
            pairs = list(zip(filters, values))
        else:
            if value is None:
                raise StoreError("value is required")
            pairs = [(filter, value)]
        with self.lock:
            planned: list[tuple[Row, Row]] = []
            for i, (flt, val) in enumerate(pairs):
                where = f"values[{i}]" if len(pairs) > 1 or values is not None else "value"
                for k in t.key:
                    if k in val:
                        raise StoreError(f"{where}: primary key column {k} cannot be updated")
                if "orderLines" in val:
                    raise StoreError(f"{where}: orderLines cannot be updated here; use orderLine mutations")
                clean = self._check_values(t, val, where)
                for row in self.select(tname, flt):
                    planned.append((row, clean))
            if not planned:
                return []
            utc = self._tick()
            ts = self.local(utc)
            changes, touched, seen = [], [], set()
            for row, clean in planned:
                self._index_remove(tname, row)
                row.update(clean)
                row["changedTimestamp"] = ts
                self._index_add(tname, row)
                pk = _pk(t, row)
                if pk not in seen:
                    seen.add(pk)
                    touched.append(row)
                    changes.append(TableChange(tname, "UPDATE", {k: row[k] for k in t.key}, utc))
            result = [dict(r) for r in touched]
            self._emit(changes)
        return result

    def delete(self, tname: str, flt: dict | None) -> int:
        t = TABLES[tname]
        with self.lock:
            rows = self.select(tname, flt)
            if not rows:
                return 0
            utc = self._tick()
            changes = []
            for row in rows:
                if tname == "order":
                    for line in list(self.lines_by_order.get(row["orderNo"], {}).values()):
                        self._remove("orderLine", line)
                        changes.append(TableChange("orderLine", "DELETE",
                                                   {"orderNo": line["orderNo"], "lineNo": line["lineNo"]}, utc))
                self._remove(tname, row)
                changes.append(TableChange(tname, "DELETE", {k: row[k] for k in t.key}, utc))
            self._emit(changes)
        return len(rows)

    # ---- seed -------------------------------------------------------------
    def seed(self, n: int, seed: int | None = None) -> None:
        """``n`` products and ``n`` orders with 1-5 lines each; ~5 % legacy rows
        with null timestamps; deterministic for a given ``n``."""
        rng = random.Random(seed if seed is not None else n)
        base = datetime(2025, 3, 1, 7, 0, tzinfo=timezone.utc)
        with self.lock:
            for i in range(1, n + 1):
                legacy = rng.random() < 0.05
                ts = None if legacy else self.local(base + timedelta(seconds=7 * i, microseconds=i))
                row = {
                    "productNo": f"P{i:05d}", "description": f"Product {i}", "information1": None,
                    "webPage": f"https://example.com/p/{i}" if rng.random() < 0.5 else None,
                    "priceQuantity": float(rng.randint(1, 10)), "quantityPerUnit": float(rng.randint(1, 100)),
                    "createdTimestamp": ts, "changedTimestamp": ts,
                }
                self._insert("product", row)
            for i in range(1, n + 1):
                legacy = rng.random() < 0.05
                ts = None if legacy else self.local(base + timedelta(seconds=7 * i + 3, microseconds=i))
                d = base + timedelta(days=i % 300)
                row = {
                    "orderNo": i, "orderDate": int(f"{d:%Y%m%d}"), "dueDate": int(f"{d + timedelta(days=14):%Y%m%d}"),
                    "customerNo": 10000 + rng.randrange(100), "name": f"Order {i}",
                    "yourReference": None, "ourReference": f"REF-{i}", "information1": None,
                    "totalDiscountAmountInCurrency": 0.0, "createdTimestamp": ts, "changedTimestamp": ts,
                }
                self._insert("order", row)
                for ln in range(1, rng.randint(1, 5) + 1):
                    self._insert("orderLine", {
                        "orderNo": i, "lineNo": ln, "productNo": f"P{rng.randint(1, n):05d}",
                        "quantity": float(rng.randint(1, 20)), "priceInCurrency": float(rng.randint(10, 900)),
                        "description": f"Line {ln}", "createdTimestamp": ts, "changedTimestamp": ts,
                    })
            # keep the commit clock ahead of every seeded timestamp
            self._clock = max(self._clock, base + timedelta(seconds=7 * n + 10))
