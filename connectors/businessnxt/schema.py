"""The Business NXT subset talkstream uses: table metadata and the GraphQL SDL
built from it (sandbox schema; the connector's queries follow the same shape).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str            # GraphQL field name: order, orderLine, product
    type_name: str       # Order, OrderLine, Product
    key: tuple[str, ...]  # primary key columns
    fields: dict[str, str]  # name -> kind: int | str | decimal | datetime


_TS = {"createdTimestamp": "datetime", "changedTimestamp": "datetime"}

ORDER = Table(
    "order", "Order", ("orderNo",),
    {
        "orderNo": "int", "orderDate": "int", "dueDate": "int", "customerNo": "int",
        "name": "str", "yourReference": "str", "ourReference": "str", "information1": "str",
        "totalDiscountAmountInCurrency": "decimal", **_TS,
    },
)
ORDER_LINE = Table(
    "orderLine", "OrderLine", ("orderNo", "lineNo"),
    {
        "orderNo": "int", "lineNo": "int", "productNo": "str", "quantity": "decimal",
        "priceInCurrency": "decimal", "description": "str", **_TS,
    },
)
PRODUCT = Table(
    "product", "Product", ("productNo",),
    {
        "productNo": "str", "description": "str", "information1": "str", "webPage": "str",
        "priceQuantity": "decimal", "quantityPerUnit": "decimal", **_TS,
    },
)
TABLES: dict[str, Table] = {t.name: t for t in (ORDER, ORDER_LINE, PRODUCT)}

_GQL = {"int": "Int", "str": "String", "decimal": "Decimal", "datetime": "DateTime"}
_FILTER = {"int": "FilterExpression_Int", "str": "FilterExpression_String",
           "decimal": "FilterExpression_Decimal", "datetime": "FilterExpression_DateTime"}
_CONN_ARGS = "filter: FilterExpression_{t}, first: Int, after: String, last: Int, before: String, skip: Int, orderBy: [OrderBy_{t}]"


def _scalar_filter(kind: str) -> str:
    g = _GQL[kind]
    return (
        f"input {_FILTER[kind]} {{\n  _eq: {g}\n  _not_eq: {g}\n  _gt: {g}\n  _gte: {g}\n  _lt: {g}\n"
        f"  _lte: {g}\n  _in: [{g}]\n  _not_in: [{g}]\n  _like: String\n  _between: Between_{g}\n}}\n"
        f"input Between_{g} {{\n  from: {g}!\n  to: {g}!\n}}\n"
    )


def _table_sdl(t: Table) -> str:
    n = t.type_name
    out = [f'"""Table {t.name}; primary key: {", ".join(t.key)}."""', f"type {n} {{"]
    out += [f"  {f}: {_GQL[k]}" for f, k in t.fields.items()]
    if t is ORDER:
        out.append(f"  joindown_OrderLine_via_Order({_CONN_ARGS.format(t='OrderLine')}): Connection_OrderLine")
    out.append("}")
    out.append(f"type Connection_{n} {{\n  totalCount: Int!\n  pageInfo: PageInfo!\n  items: [{n}]\n}}")
    out.append(f"input FilterExpression_{n} {{\n  _and: [FilterExpression_{n}]\n  _or: [FilterExpression_{n}]")
    out += [f"  {f}: {_FILTER[k]}" for f, k in t.fields.items()]
    out.append("}")
    out.append(f"input OrderBy_{n} {{")
    out += [f"  {f}: SortOrder" for f in t.fields]
    out.append("}")
    out.append(f"input {n}_Input {{")
    out += [f"  {f}: {_GQL[k]}" for f, k in t.fields.items() if k != "datetime"]
    if t is ORDER:
        out.append("  orderLines: [OrderLine_Input!]")
    out.append("}")
    out.append(f"type {n}_Result {{\n  affectedRows: Int!\n  items: [{n}]\n}}")
    return "\n".join(out) + "\n"


def build_sdl() -> str:
    parts = [
        '"""Server-local date and time without an offset, e.g. 2026-11-25T14:03:11.1250000."""',
        "scalar DateTime",
        '"""Decimal number (JSON number)."""',
        "scalar Decimal",
        "enum SortOrder { ASC DESC }",
        "type PageInfo {\n  hasNextPage: Boolean!\n  hasPreviousPage: Boolean!\n  startCursor: String\n  endCursor: String\n}",
    ]
    parts += [_scalar_filter(k) for k in ("int", "str", "decimal", "datetime")]
    parts += [_table_sdl(t) for t in TABLES.values()]
    q = ["type Query_UseCompany {"]
    m = ["type Mutation_UseCompany {"]
    for t in TABLES.values():
        n = t.type_name
        q.append(f"  {t.name}({_CONN_ARGS.format(t=n)}): Connection_{n}")
        m.append(f"  {t.name}_create(values: [{n}_Input!]!): {n}_Result")
        m.append(
            f"  {t.name}_update(filter: FilterExpression_{n}, value: {n}_Input, "
            f"filters: [FilterExpression_{n}!], values: [{n}_Input!]): {n}_Result"
        )
        m.append(f"  {t.name}_delete(filter: FilterExpression_{n}): {n}_Result")
    q.append("}")
    m.append("}")
    parts += ["\n".join(q), "\n".join(m)]
    parts.append("type Query {\n  useCompany(no: Int!): Query_UseCompany\n}")
    parts.append("type Mutation {\n  useCompany(no: Int!): Mutation_UseCompany\n}")
    return "\n\n".join(parts) + "\n"


SDL = build_sdl()
