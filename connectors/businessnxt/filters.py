"""Pure Business NXT query semantics used by the sandbox: filter expressions,
ordering, cursor paging, and key planning (which rows a filter can only match).

A filter is the GraphQL input as a dict, e.g.
``{"_and": [{"orderNo": {"_gte": 5}}, {"name": {"_like": "%AS"}}]}``.
Operators: ``_eq _not_eq _gt _gte _lt _lte _in _not_in _like _between``
(``{"from": a, "to": b}``, inclusive); ``_and``/``_or`` take lists. Several
fields in one object are combined with AND.
"""
from __future__ import annotations

import base64
import re
from typing import Any, Callable, Iterable

from connectors.businessnxt.timezones import normalize_local

OPERATORS = ("_eq", "_not_eq", "_gt", "_gte", "_lt", "_lte", "_in", "_not_in", "_like", "_between")

Row = dict[str, Any]
Predicate = Callable[[Row], bool]


class FilterError(ValueError):
    """The filter cannot be evaluated (unknown field/operator, bad value)."""


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        if not isinstance(value, str):
            raise FilterError(f"DateTime filter value must be a string, got {value!r}")
        try:
            return normalize_local(value)
        except ValueError as exc:
            raise FilterError(str(exc)) from None
    if kind == "decimal":
        try:
            return float(value)
        except (TypeError, ValueError):
            raise FilterError(f"not a decimal: {value!r}") from None
    return value


def like_regex(pattern: str) -> re.Pattern[str]:
    """``%`` matches any run of characters; everything else literally; case-insensitive."""
    parts = [re.escape(p) for p in pattern.split("%")]
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)


def _compile_op(field: str, op: str, value: Any, kind: str) -> Predicate:
    if op in ("_in", "_not_in"):
        if value is None:
            raise FilterError(f"{field}.{op} needs a list")
        vals = frozenset(_coerce(kind, v) for v in value)
        if op == "_in":
            return lambda r: r.get(field) in vals
        return lambda r: r.get(field) not in vals
    if op == "_between":
        if not isinstance(value, dict) or "from" not in value or "to" not in value:
            raise FilterError(f"{field}._between needs {{from, to}}")
        lo, hi = _coerce(kind, value["from"]), _coerce(kind, value["to"])

        def between(r: Row) -> bool:
            v = r.get(field)
            return v is not None and lo <= v <= hi

        return between
    if op == "_like":
        if value is None:
            raise FilterError(f"{field}._like needs a pattern")
        rx = like_regex(str(value))
        return lambda r: r.get(field) is not None and rx.match(str(r.get(field))) is not None
    v = _coerce(kind, value)
    if op == "_eq":
        return lambda r: r.get(field) == v
    if op == "_not_eq":
        return lambda r: r.get(field) != v
    if v is None:
        return lambda r: False
    if op == "_gt":
        return lambda r: (x := r.get(field)) is not None and x > v
    if op == "_gte":
        return lambda r: (x := r.get(field)) is not None and x >= v
    if op == "_lt":
        return lambda r: (x := r.get(field)) is not None and x < v
    if op == "_lte":
        return lambda r: (x := r.get(field)) is not None and x <= v
    raise FilterError(f"unknown operator {op}")


def _all(preds: list[Predicate]) -> Predicate:
    if not preds:
        return lambda r: True
    if len(preds) == 1:
        return preds[0]
    return lambda r: all(p(r) for p in preds)


def compile_filter(flt: dict[str, Any] | None, fields: dict[str, str]) -> Predicate:
    """Filter expression -> predicate on a row dict. ``fields``: name -> kind
    (``int``, ``str``, ``decimal``, ``datetime``)."""
    if not flt:
        return lambda r: True
    preds: list[Predicate] = []
    for name, cond in flt.items():
        if cond is None:
            continue
        if name == "_and":
            preds.append(_all([compile_filter(f, fields) for f in cond]))
        elif name == "_or":
            subs = [compile_filter(f, fields) for f in cond]
            preds.append(lambda r, subs=subs: any(p(r) for p in subs))
        else:
            if name not in fields:
                raise FilterError(f"unknown field {name}")
            for op, value in cond.items():
                if op not in OPERATORS:
                    raise FilterError(f"unknown operator {op}")
                preds.append(_compile_op(name, op, value, fields[name]))
    return _all(preds)


def candidate_values(flt: dict[str, Any] | None, field: str) -> set | None:
    """The finite set of values ``field`` can take in rows matching ``flt``,
    or ``None`` when the filter does not restrict it that way (then scan)."""
    if not flt:
        return None
    found: set | None = None
    for name, cond in flt.items():
        if cond is None:
            continue
        vals: set | None = None
        if name == "_and":
            for sub in cond:
                v = candidate_values(sub, field)
                if v is not None:
                    found = v if found is None else found & v
            continue
        if name == "_or":
            union: set = set()
            for sub in cond:
                v = candidate_values(sub, field)
                if v is None:
                    union = None  # type: ignore[assignment]
                    break
                union |= v
            vals = union
        elif name == field:
            if "_eq" in cond:
                vals = {cond["_eq"]}
            elif cond.get("_in") is not None:
                vals = set(cond["_in"])
        if vals is not None:
            found = vals if found is None else found & vals
    return found


def lower_bound(flt: dict[str, Any] | None, field: str, kind: str) -> Any | None:
    """A value that ``field`` is at least in every row matching ``flt`` (from ``_gte``, ``_gt``,
    ``_eq`` or ``_between``), or ``None`` when the filter sets no such bound (the store then
    narrows its candidates by the bound, and still applies the whole filter)."""
    if not flt:
        return None
    bounds: list[Any] = []
    for name, cond in flt.items():
        if cond is None:
            continue
        if name == "_and":
            bounds += [b for b in (lower_bound(sub, field, kind) for sub in cond) if b is not None]
        elif name == "_or":
            subs = [lower_bound(sub, field, kind) for sub in cond]
            if subs and all(b is not None for b in subs):
                bounds.append(min(subs))
        elif name == field and isinstance(cond, dict):
            for op in ("_gte", "_gt", "_eq"):
                if cond.get(op) is not None:
                    bounds.append(_coerce(kind, cond[op]))
            between = cond.get("_between")
            if isinstance(between, dict) and between.get("from") is not None:
                bounds.append(_coerce(kind, between["from"]))
    return max(bounds) if bounds else None


def sort_rows(rows: list[Row], order_by: Iterable[dict[str, str]] | None, key_fields: tuple[str, ...]) -> list[Row]:
    """Stable multi-key sort; nulls first on ASC; primary key ASC breaks ties."""
    specs: list[tuple[str, bool]] = []
    for item in order_by or ():
        for name, direction in item.items():
            if direction is not None:
                specs.append((name, str(direction).upper() == "DESC"))
    names = {n for n, _ in specs}
    specs += [(k, False) for k in key_fields if k not in names]
    out = list(rows)
    for name, desc in reversed(specs):
        out.sort(key=lambda r, n=name: (r.get(n) is not None, r.get(n) if r.get(n) is not None else 0),
                 reverse=desc)
    return out


def encode_cursor(position: int) -> str:
    """1-based absolute position -> opaque cursor (base64 of the number, like NXT)."""
    return base64.b64encode(str(position).encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor.encode(), validate=True).decode())
    except Exception:
        raise FilterError(f"invalid cursor {cursor!r}") from None


def page(
    total: int,
    *,
    first: int | None = None,
    after: str | None = None,
    last: int | None = None,
    before: str | None = None,
    skip: int | None = None,
    cap: int = 5000,
) -> tuple[int, int]:
    """Absolute ``[start, end)`` slice of an ordered result of ``total`` rows."""
    for name, v in (("first", first), ("last", last), ("skip", skip)):
        if v is not None and v <= 0:
            raise FilterError(f"'{name}' must be a positive number")
    start, end = 0, total
    if after is not None:
        start = max(start, min(decode_cursor(after), total))
    if before is not None:
        end = min(end, max(decode_cursor(before) - 1, 0))
    if skip:
        start = min(start + skip, end)
    if first is not None:
        end = min(end, start + min(first, cap))
    if last is not None:
        start = max(start, end - min(last, cap))
    if end - start > cap:
        end = start + cap
    return start, max(start, end)
