"""The Customcrm sandbox: an in-memory Customcrm serving ``docs/contracts/customcrm-api.md``.

``create_app()`` builds the Starlette app (state in ``app.state.sandbox``, a
:class:`Sandbox`); ``run()`` serves it in the foreground (CLI). The record
store (:class:`Store`) knows nothing about HTTP; the handlers translate
between HTTP and store calls, the :class:`RateLimiter` and the idempotency
table. Fault injection and request statistics come from
``connectors.common.sandbox``.

Decisions the contract leaves open (documented in ``openapi.json`` too):

- ``Lines[].ProductId`` must be the ``Id`` of an existing product (a
  soft-deleted one included: old orders keep referencing it); checked when
  ``Lines`` are written, 422 otherwise.
- ``Sku`` (exact) and ``Email`` (case-insensitive) uniqueness failures are
  ``422 validation_error`` with the property in ``fields``.
- A PATCH that changes nothing returns the record and does not bump
  ``Version``/``ModifiedAt``. ``null`` in a merge patch removes the property,
  i.e. resets it to its default (``required`` for required properties).
- ``DELETE`` of an already deleted record is ``204`` before ``If-Match`` is
  checked (a retried delete must not fail).
- Idempotency keys are scoped per resource; only successful creates (201) are
  remembered (a rejected create can be retried with a corrected body).
- In a bulk response a delete's result carries the deleted record.
- Price and StockQuantity default to ``"0"``; Order Status to ``"open"``.
- ``CustomerNo`` and ``LineNo`` are bounded to 2^31-1.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import hashlib
import hmac
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.common.sandbox import SandboxControl, SandboxMiddleware
from connectors.customcrm.models import DATA_MODELS, READ_ONLY, field_errors

API = "/api/v1"
PREFIXES = {"orders": "ord", "products": "prd", "users": "usr"}
IDEMPOTENCY_TTL = 24 * 3600.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_BULK = 100


# --------------------------------------------------------------------------- errors


class ApiFailure(Exception):
    """An API error response: ``{"error": {"code", "message", **extra}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def validation_failure(fields: dict[str, str], message: str = "the record is invalid") -> ApiFailure:
    return ApiFailure(422, "validation_error", message, fields=fields)


# --------------------------------------------------------------------------- pure helpers


def format_ts(us: int) -> str:
    """Microseconds since the epoch -> ``2026-11-25T10:01:02.123456Z``."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % 1_000_000:06d}Z"


def parse_ts(value: str) -> str:
    """Any RFC 3339 time with an offset -> the canonical UTC form used for ordering.

    Raises ``ValueError`` for a value without a time zone or not RFC 3339.
    """
    if not isinstance(value, str) or len(value) < 20 or value[10] not in "Tt":
        raise ValueError("expected an RFC 3339 date-time such as 2026-11-25T10:01:02.123456Z")
    dt = datetime.fromisoformat(value.replace("z", "Z"))
    if dt.tzinfo is None:
        raise ValueError("the date-time needs a time zone (Z or +hh:mm)")
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def encode_cursor(resource: str, key: tuple[str, str]) -> str:
    """Opaque cursor: continue after the feed position ``(ModifiedAt, Id)``."""
    raw = orjson.dumps([resource, key[0], key[1]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(resource: str, cursor: str) -> tuple[str, str]:
    """Inverse of :func:`encode_cursor`; ``ValueError`` for a cursor not made for ``resource``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        res, modified_at, rid = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise ValueError("invalid cursor") from None
    if res != resource or not isinstance(modified_at, str) or not isinstance(rid, str):
        raise ValueError("invalid cursor")
    return modified_at, rid


def parse_if_match(value: str | None) -> int | None:
    """``If-Match: 3`` (also ``"3"`` and ``W/"3"``) -> 3; ``ValueError`` when not a version."""
    if value is None:
        return None
    v = value.strip()
    if v.startswith("W/"):
        v = v[2:]
    v = v.strip('"')
    if not v.isdigit() or len(v) > 12:
        raise ValueError(f"If-Match must be a record Version, got {value!r}")
    return int(v)


def body_hash(data: Any) -> str:
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=headers)


def error_response(failure: ApiFailure, headers: dict[str, str] | None = None) -> Response:
    return json_response(failure.body(), failure.status, headers)


# --------------------------------------------------------------------------- store


@dataclass
class Collection:
    """The records of one resource plus the change-feed index sorted by (ModifiedAt, Id)."""

    name: str
    prefix: str
    records: dict[str, dict] = field(default_factory=dict)
    index: list[tuple[str, str]] = field(default_factory=list)
    unique: dict[str, str] = field(default_factory=dict)  # Sku / lower(Email) of live records -> Id
    next_no: int = 1
    deleted: int = 0

    def new_id(self) -> str:
        rid = f"{self.prefix}_{self.next_no:06d}"
        self.next_no += 1
        return rid

    def put(self, record: dict, old: dict | None) -> None:
        if old is not None:
            key = (old["ModifiedAt"], old["Id"])
            i = bisect.bisect_left(self.index, key)
            if i < len(self.index) and self.index[i] == key:
                del self.index[i]
        self.records[record["Id"]] = record
        bisect.insort(self.index, (record["ModifiedAt"], record["Id"]))


UNIQUE_FIELD = {"products": "Sku", "users": "Email"}


def unique_value(resource: str, data: dict) -> str | None:
    prop = UNIQUE_FIELD.get(resource)
    if prop is None:
        return None
    value = data.get(prop)
    if value is None:
        return None
    return value.lower() if prop == "Email" else value


class Store:
    """In-memory records of all resources. Thread-safe; every call is atomic."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.collections = {name: Collection(name, prefix) for name, prefix in PREFIXES.items()}
        self._last_us = 0
        self._idempotency: dict[tuple[str, str], tuple[str, float, int, bytes]] = {}

    # -- clock
    def _tick(self) -> str:
        us = time.time_ns() // 1000
        if us <= self._last_us:
            us = self._last_us + 1
        self._last_us = us
        return format_ts(us)

    def collection(self, resource: str) -> Collection:
        try:
            return self.collections[resource]
        except KeyError:
            raise ApiFailure(404, "not_found", f"unknown resource {resource!r}") from None

    # -- validation
    def _validate(self, resource: str, data: Any, self_id: str | None, check_lines: bool) -> dict:
        if not isinstance(data, dict):
            raise validation_failure({"(body)": "expected a JSON object"})
        model = DATA_MODELS[resource]
        try:
            clean = model.model_validate(data).model_dump()
        except PydanticValidationError as exc:
            raise validation_failure(field_errors(exc)) from None
        coll = self.collections[resource]
        uv = unique_value(resource, clean)
        if uv is not None:
            owner = coll.unique.get(uv)
            if owner is not None and owner != self_id:
                prop = UNIQUE_FIELD[resource]
                raise validation_failure({prop: f"already used by {owner}"}, f"{prop} must be unique")
        if resource == "orders" and check_lines:
            products = self.collections["products"].records
            bad = {
                f"Lines.{i}.ProductId": f"no product with Id {line['ProductId']!r}"
                for i, line in enumerate(clean["Lines"])
                if line["ProductId"] not in products
            }
            if bad:
                raise validation_failure(bad, "order lines reference unknown products")
        return clean

    @staticmethod
    def _strip_read_only(data: Any) -> Any:
        if isinstance(data, dict) and any(k in data for k in READ_ONLY):
            return {k: v for k, v in data.items() if k not in READ_ONLY}
        return data

    def _set_unique(self, coll: Collection, old: dict | None, new: dict | None) -> None:
        old_v = unique_value(coll.name, old) if old and not old["Deleted"] else None
        new_v = unique_value(coll.name, new) if new and not new["Deleted"] else None
        if old_v == new_v:
            return
        if old_v is not None and coll.unique.get(old_v) == (old or {}).get("Id"):
            del coll.unique[old_v]
        if new_v is not None:
            coll.unique[new_v] = new["Id"]  # type: ignore[index]

    # -- operations
    def get(self, resource: str, rid: str) -> dict:
        with self.lock:
            rec = self.collection(resource).records.get(rid)
            if rec is None:
                raise ApiFailure(404, "not_found", f"no {resource} record with Id {rid!r}")
            return rec

    def create(self, resource: str, data: Any) -> dict:
        with self.lock:
            coll = self.collection(resource)
            clean = self._validate(resource, self._strip_read_only(data), None, True)
            now = self._tick()
            rid = coll.new_id()
            record = {"Id": rid, **clean, "CreatedAt": now, "ModifiedAt": now, "Version": 1, "Deleted": False}
            coll.put(record, None)
            self._set_unique(coll, None, record)
            return record

    def inject(self, resource: str, data: dict) -> dict:
        """Store a record exactly as given, unvalidated (``POST /_sandbox/inject/{resource}``):
        the legacy data a real API can return that breaks its own schema (bad-input tests)."""
        with self.lock:
            coll = self.collection(resource)
            now = self._tick()
            record = {**data, "Id": coll.new_id(), "CreatedAt": now, "ModifiedAt": now, "Version": 1,
                      "Deleted": False}
            coll.put(record, None)
            return record

    def create_idempotent(self, resource: str, data: Any, key: str | None) -> tuple[int, bytes]:
        """Create, honouring an Idempotency-Key: ``(status, response body)``."""
        with self.lock:
            if key is None:
                return 201, orjson.dumps(self.create(resource, data))
            self.collection(resource)
            digest = body_hash(data)
            slot = (resource, key)
            hit = self._idempotency.get(slot)
            now = time.monotonic()
            if hit is not None and now - hit[1] < IDEMPOTENCY_TTL:
                if hit[0] != digest:
                    raise ApiFailure(
                        409, "idempotency_key_reused",
                        f"Idempotency-Key {key!r} was used with another request body",
                    )
                return hit[2], hit[3]
            body = orjson.dumps(self.create(resource, data))
            self._idempotency[slot] = (digest, now, 201, body)
            return 201, body

    def update(self, resource: str, rid: str, patch: Any, if_version: int | None) -> dict:
        with self.lock:
            coll = self.collection(resource)
            old = coll.records.get(rid)
            if old is None:
                raise ApiFailure(404, "not_found", f"no {resource} record with Id {rid!r}")
            if old["Deleted"]:
                raise ApiFailure(409, "deleted", f"{rid} is deleted and cannot be changed")
            if if_version is not None and if_version != old["Version"]:
                raise ApiFailure(
                    412, "version_conflict",
                    f"{rid} is at version {old['Version']}, not {if_version}",
                    current_version=old["Version"],
                )
            patch = self._strip_read_only(patch)
            if not isinstance(patch, dict):
                raise validation_failure({"(body)": "expected a JSON object (merge patch)"})
            merged = {k: v for k, v in old.items() if k not in READ_ONLY}
            for k, v in patch.items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
            clean = self._validate(resource, merged, rid, "Lines" in patch)
            if all(old.get(k) == v for k, v in clean.items()):
                return old
            record = {
                "Id": rid, **clean, "CreatedAt": old["CreatedAt"], "ModifiedAt": self._tick(),
                "Version": old["Version"] + 1, "Deleted": False,
            }
            coll.put(record, old)
            self._set_unique(coll, old, record)
            return record

    def delete(self, resource: str, rid: str, if_version: int | None) -> dict:
        with self.lock:
            coll = self.collection(resource)
            old = coll.records.get(rid)
            if old is None:
                raise ApiFailure(404, "not_found", f"no {resource} record with Id {rid!r}")
            if old["Deleted"]:
                return old
            if if_version is not None and if_version != old["Version"]:
                raise ApiFailure(
                    412, "version_conflict",
                    f"{rid} is at version {old['Version']}, not {if_version}",
                    current_version=old["Version"],
                )
            record = {**old, "ModifiedAt": self._tick(), "Version": old["Version"] + 1, "Deleted": True}
            coll.put(record, old)
            coll.deleted += 1
            self._set_unique(coll, old, record)
            return record

    def changes(
        self, resource: str, since: str | None, after: tuple[str, str] | None, limit: int
    ) -> tuple[list[dict], tuple[str, str] | None]:
        """A page of the change feed and the position to continue after (``None``: end)."""
        with self.lock:
            coll = self.collection(resource)
            idx = coll.index
            start = 0
            if since is not None:
                start = bisect.bisect_left(idx, (since, ""))
            if after is not None:
                start = max(start, bisect.bisect_right(idx, after))
            keys = idx[start:start + limit]
            items = [coll.records[rid] for _, rid in keys]
            more = start + limit < len(idx)
            return items, (keys[-1] if keys and more else None)

    def counts(self) -> dict:
        with self.lock:
            return {
                name: {"total": len(c.records), "deleted": c.deleted, "live": len(c.records) - c.deleted}
                for name, c in self.collections.items()
            }

    # -- seed data
    def seed(self, n: int) -> None:
        """N products, N orders (1-5 lines each) and N//10 users, deterministic for N."""
        rnd = random.Random(n)
        products = []
        for i in range(1, n + 1):
            products.append(self.create("products", {
                "Sku": f"SKU-{i:06d}",
                "Name": f"Product {i}",
                "Description": rnd.choice([None, f"Seeded product number {i}"]),
                "Price": str(Decimal(rnd.randint(100, 99_999)) / 100),
                "StockQuantity": str(rnd.randint(0, 500)),
                "Url": rnd.choice([None, f"https://shop.example.com/p/{i}"]),
            })["Id"])
        for i in range(1, n + 1):
            lines = [
                {
                    "LineNo": no,
                    "ProductId": rnd.choice(products),
                    "Quantity": str(rnd.randint(1, 20)),
                    "UnitPrice": str(Decimal(rnd.randint(100, 99_999)) / 100),
                    "Description": None,
                }
                for no in range(1, rnd.randint(1, 5) + 1)
            ]
            day = 1 + rnd.randrange(28)
            self.create("orders", {
                "Name": f"Order {i}",
                "CustomerNo": 10000 + rnd.randrange(0, 100),  # the ERP's customers 10000-10099
                "OrderDate": f"2026-{1 + rnd.randrange(12):02d}-{day:02d}",
                "DueDate": rnd.choice([None, f"2027-01-{day:02d}"]),
                "Discount": rnd.choice(["0", "5.00", "10"]),
                "YourReference": rnd.choice([None, f"REF-{i}"]),
                "Status": rnd.choice(["open", "open", "won", "lost"]),
                "Lines": lines,
            })
        for i in range(1, n // 10 + 1):
            self.create("users", {
                "FullName": f"User {i}",
                "Email": f"user{i}@example.com",
                "Phone": rnd.choice([None, f"+47 {rnd.randint(10_000_000, 99_999_999)}"]),
                "Title": rnd.choice([None, "Sales", "Manager", "Support"]),
                "Active": rnd.random() > 0.1,
            })


# --------------------------------------------------------------------------- rate limit


class RateLimiter:
    """Sliding-window limit per token: at most ``max_requests`` in any ``period`` seconds."""

    def __init__(self, max_requests: int, period: float) -> None:
        self.max_requests = max_requests
        self.period = period
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, token: str, now: float | None = None) -> float | None:
        """``None`` when allowed (and counted), else seconds until the next request is allowed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(token, deque())
            while hits and hits[0] <= now - self.period:
                hits.popleft()
            if len(hits) >= self.max_requests:
                return hits[0] + self.period - now
            hits.append(now)
            return None


# --------------------------------------------------------------------------- OpenAPI


def _error_schema(code: str | None = None, extra: dict | None = None) -> dict:
    inner: dict = {
        "type": "object",
        "required": ["code", "message", *(extra or {})],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, **(extra or {})},
    }
    if code:
        inner["properties"]["code"] = {"type": "string", "enum": [code]}
    return {"type": "object", "required": ["error"], "properties": {"error": inner}}


def openapi_document() -> dict:
    """The OpenAPI 3.1 document of the sandbox (record schemas from the pydantic models)."""
    from pydantic.json_schema import models_json_schema

    from connectors.customcrm.models import RECORD_MODELS

    names = {"orders": ("OrderData", "Order"), "products": ("ProductData", "Product"), "users": ("UserData", "User")}
    models = [(DATA_MODELS[r], "validation") for r in names] + [(RECORD_MODELS[r], "serialization") for r in names]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict = dict(top["$defs"])
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
    schemas["Error"] = _error_schema()
    schemas["VersionConflict"] = _error_schema("version_conflict", {"current_version": {"type": "integer"}})
    schemas["ValidationError"] = _error_schema(
        "validation_error", {"fields": {"type": "object", "additionalProperties": {"type": "string"}}}
    )
    schemas["BulkResult"] = {
        "type": "object",
        "required": ["status", "record", "error"],
        "properties": {
            "status": {"type": "integer"},
            "record": {"anyOf": [{"type": "object"}, {"type": "null"}]},
            "error": {"anyOf": [_error_schema()["properties"]["error"], {"type": "null"}]},
        },
    }
    json_of = lambda schema: {"application/json": {"schema": schema}}  # noqa: E731
    err = lambda desc, name="Error": {"description": desc, "content": json_of(ref(name))}  # noqa: E731
    common = {
        "401": err("Missing or wrong bearer token"),
        "429": {
            "description": "Rate limited",
            "headers": {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
            "content": json_of(ref("Error")),
        },
    }
    if_match = {
        "name": "If-Match", "in": "header", "required": False,
        "description": "Expected current Version (optimistic concurrency).",
        "schema": {"type": "string", "pattern": "^(W/)?\"?[0-9]{1,9}\"?$"},
    }
    examples = {
        "orders": {"Name": "Order 1", "CustomerNo": 10001, "OrderDate": "2026-11-25", "Status": "open",
                   "Lines": [{"LineNo": 1, "ProductId": "prd_000001", "Quantity": "2", "UnitPrice": "199.00"}]},
        "products": {"Sku": "SKU-EXAMPLE", "Name": "Example product", "Price": "199.00"},
        "users": {"FullName": "Ada Lovelace", "Email": "ada@example.com", "Title": "Engineer"},
    }
    patch_examples = {"orders": {"Name": "Renamed order", "YourReference": None},
                      "products": {"Name": "Renamed product", "Url": None},
                      "users": {"Title": "Manager"}}
    paths: dict = {}
    for resource, (data_name, record_name) in names.items():
        id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
                    "example": f"{PREFIXES[resource]}_000001"}
        data_schema = schemas[data_name]
        patch_name = f"{record_name}Patch"
        schemas[patch_name] = {
            "type": "object",
            "description": "JSON merge patch: null removes a property (resets it to its default); "
            "Lines is replaced as a whole.",
            "additionalProperties": False,
            "properties": {
                k: (v if any(a.get("type") == "null" for a in v.get("anyOf", [])) else
                    {"anyOf": [v, {"type": "null"}]})
                for k, v in data_schema["properties"].items()
            },
        }
        write_ops = {
            "create": {
                "type": "object", "required": ["op", "data"], "additionalProperties": False,
                "properties": {
                    "op": {"const": "create"},
                    "idempotency_key": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 255},
                                                  {"type": "null"}]},
                    "data": ref(data_name),
                },
            },
            "update": {
                "type": "object", "required": ["op", "id", "data"], "additionalProperties": False,
                "properties": {
                    "op": {"const": "update"}, "id": {"type": "string", "minLength": 1},
                    "if_version": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "data": ref(patch_name),
                },
            },
            "delete": {
                "type": "object", "required": ["op", "id"], "additionalProperties": False,
                "properties": {
                    "op": {"const": "delete"}, "id": {"type": "string", "minLength": 1},
                    "if_version": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                },
            },
        }
        base = f"{API}/{resource}"
        paths[base] = {
            "get": {
                "operationId": f"list_{resource}",
                "summary": f"Change feed of {resource}, ordered by (ModifiedAt, Id); deleted records included",
                "parameters": [
                    {"name": "modified_since", "in": "query", "required": False,
                     "description": "Inclusive lower bound (RFC 3339).",
                     "schema": {"type": "string", "format": "date-time"}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
                    {"name": "cursor", "in": "query", "required": False,
                     "description": "Opaque next_cursor of the previous page.", "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {"description": "A page of the feed", "content": json_of({
                        "type": "object", "required": ["items", "next_cursor"],
                        "properties": {"items": {"type": "array", "items": ref(record_name)},
                                       "next_cursor": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
                    })},
                    "400": err("Bad parameter"), **common,
                },
            },
            "post": {
                "operationId": f"create_{resource[:-1]}",
                "summary": f"Create a {resource[:-1]}",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "minLength": 1, "maxLength": 255}}],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref(data_name), "example": examples[resource]}}},
                "responses": {
                    "201": {"description": "Created", "content": json_of(ref(record_name))},
                    "400": err("Bad request (invalid JSON or header)"),
                    "409": err("Idempotency-Key reused with another body"),
                    "413": err("Body larger than 1 MiB"),
                    "422": err("Validation error", "ValidationError"), **common,
                },
            },
        }
        paths[f"{base}/bulk"] = {
            "post": {
                "operationId": f"bulk_{resource}",
                "summary": f"1-{MAX_BULK} independent operations on {resource}",
                "requestBody": {"required": True, "content": json_of({
                    "type": "object", "required": ["operations"], "additionalProperties": False,
                    "properties": {"operations": {
                        "type": "array", "minItems": 1, "maxItems": MAX_BULK,
                        "items": {"oneOf": list(write_ops.values())},
                    }},
                })},
                "responses": {
                    "200": {"description": "One result per operation, in order", "content": json_of({
                        "type": "object", "required": ["results"],
                        "properties": {"results": {"type": "array", "items": ref("BulkResult")}},
                    })},
                    "400": err("Invalid JSON"), "413": err("Body larger than 1 MiB"),
                    "422": err("Validation error", "ValidationError"), **common,
                },
            },
        }
        paths[f"{base}/{{id}}"] = {
            "parameters": [id_param],
            "get": {
                "operationId": f"get_{resource[:-1]}",
                "summary": f"One {resource[:-1]} (also when deleted)",
                "responses": {"200": {"description": "The record", "content": json_of(ref(record_name))},
                              "404": err("Unknown Id"), **common},
            },
            "patch": {
                "operationId": f"update_{resource[:-1]}",
                "summary": f"Change a {resource[:-1]} (JSON merge patch)",
                "parameters": [if_match],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref(patch_name), "example": patch_examples[resource]},
                    "application/merge-patch+json": {"schema": ref(patch_name), "example": patch_examples[resource]},
                }},
                "responses": {
                    "200": {"description": "The changed record", "content": json_of(ref(record_name))},
                    "400": err("Bad request"), "404": err("Unknown Id"),
                    "409": err("The record is deleted"),
                    "412": err("If-Match differs from the current Version", "VersionConflict"),
                    "413": err("Body larger than 1 MiB"),
                    "422": err("Validation error", "ValidationError"), **common,
                },
            },
            "delete": {
                "operationId": f"delete_{resource[:-1]}",
                "summary": f"Soft-delete a {resource[:-1]} (again: 204)",
                "parameters": [if_match],
                "responses": {
                    "204": {"description": "Deleted"}, "400": err("Bad If-Match"), "404": err("Unknown Id"),
                    "412": err("If-Match differs from the current Version", "VersionConflict"), **common,
                },
            },
        }
    sandbox_tag = ["sandbox"]
    paths["/_sandbox/health"] = {"get": {"operationId": "sandbox_health", "tags": sandbox_tag, "security": [],
                                         "responses": {"200": {"description": "Up"}}}}
    paths["/_sandbox/stats"] = {
        "get": {"operationId": "sandbox_stats", "tags": sandbox_tag, "security": [],
                "responses": {"200": {"description": "Request counts per endpoint and status, record counts",
                                      "content": json_of({"type": "object"})}}},
        "delete": {"operationId": "sandbox_stats_reset", "tags": sandbox_tag, "security": [],
                   "responses": {"204": {"description": "Counters reset"}}},
    }
    paths["/_sandbox/faults"] = {
        "post": {
            "operationId": "sandbox_set_faults", "tags": sandbox_tag, "security": [],
            "requestBody": {"required": True, "content": json_of({
                "type": "object", "additionalProperties": False,
                "properties": {
                    "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "status": {"type": "integer", "enum": [500, 503, 429]},
                    "latency_ms": {"type": "integer", "minimum": 0},
                    "timeout_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "malformed_rate": {"type": "number", "minimum": 0, "maximum": 1},
                    "hang_seconds": {"type": "number", "minimum": 0},
                },
            })},
            "responses": {"200": {"description": "Faults now active", "content": json_of({"type": "object"})},
                          "400": err("Invalid faults")},
        },
        "delete": {"operationId": "sandbox_clear_faults", "tags": sandbox_tag, "security": [],
                   "responses": {"200": {"description": "Faults cleared", "content": json_of({"type": "object"})}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Customcrm API (talkstream sandbox)",
            "version": "1.0.0",
            "description": "Customcrm REST API as served by the talkstream sandbox. "
            "Lines[].ProductId must be an existing product Id; Sku and Email uniqueness failures are 422.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


_OPENAPI: bytes | None = None


def openapi_bytes() -> bytes:
    global _OPENAPI
    if _OPENAPI is None:
        _OPENAPI = orjson.dumps(openapi_document())
    return _OPENAPI


# --------------------------------------------------------------------------- the app


class Sandbox:
    """Everything a running Customcrm sandbox holds (``app.state.sandbox``)."""

    def __init__(self, token: str, rate_limit: tuple[int, float] | None, body_limit: int,
                 random_seed: int | None) -> None:
        self.token = token
        self.store = Store()
        self.control = SandboxControl(seed=random_seed)
        self.limiter = RateLimiter(*rate_limit) if rate_limit else None
        self.body_limit = body_limit

    def extra_stats(self) -> dict:
        return {"records": self.store.counts()}


def endpoint_label(method: str, path: str) -> str:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "api" and parts[1] == "v1":
        if len(parts) == 3:
            return f"{method} {API}/{parts[2]}"
        if len(parts) == 4:
            tail = "bulk" if parts[3] == "bulk" and method == "POST" else "{id}"
            return f"{method} {API}/{parts[2]}/{tail}"
    return f"{method} {path}"


def injected_error_body(status: int) -> tuple[bytes, str]:
    code = {429: "rate_limited", 503: "unavailable"}.get(status, "internal_error")
    body = {"error": {"code": code, "message": f"injected fault (HTTP {status})"}}
    return orjson.dumps(body), "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiFailure(413, "payload_too_large", f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiFailure(413, "payload_too_large", f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiFailure(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def create_app(
    *,
    token: str = "sandbox-token",
    seed: int = 0,
    rate_limit: tuple[int, float] | None = (100, 10.0),
    body_limit: int = 1 << 20,
    random_seed: int | None = None,
) -> Starlette:
    """The Customcrm sandbox as an ASGI app; its state is ``app.state.sandbox``."""
    sb = Sandbox(token, rate_limit, body_limit, random_seed)
    if seed:
        sb.store.seed(seed)
    store = sb.store
    expected = token.encode()

    def guard(request: Request) -> None:
        """Auth, then the per-token rate limit; raises ApiFailure."""
        auth = request.headers.get("authorization", "")
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiFailure(401, "unauthorized", "missing or wrong bearer token")
        if sb.limiter is not None:
            wait = sb.limiter.check(given.strip())
            if wait is not None:
                raise ApiFailure(429, "rate_limited", "too many requests", retry_after=max(1, math.ceil(wait)))
        store.collection(request.path_params["resource"])

    def fail(exc: ApiFailure) -> Response:
        headers = None
        if exc.status == 429:
            headers = {"Retry-After": str(exc.extra.get("retry_after", 1))}
        return error_response(exc, headers)

    async def list_records(request: Request) -> Response:
        try:
            guard(request)
            resource = request.path_params["resource"]
            q = request.query_params
            since = after = None
            if "modified_since" in q:
                try:
                    since = parse_ts(q["modified_since"])
                except ValueError as exc:
                    raise ApiFailure(400, "bad_request", f"modified_since: {exc}", parameter="modified_since")
            limit = DEFAULT_LIMIT
            if "limit" in q:
                raw = q["limit"]
                if not (raw.isdigit() and len(raw) <= 5 and 1 <= int(raw) <= MAX_LIMIT):
                    raise ApiFailure(400, "bad_request", f"limit must be an integer 1..{MAX_LIMIT}",
                                     parameter="limit")
                limit = int(raw)
            if "cursor" in q:
                try:
                    after = decode_cursor(resource, q["cursor"])
                except ValueError:
                    raise ApiFailure(400, "bad_request", "cursor is not valid for this resource",
                                     parameter="cursor") from None
            items, nxt = store.changes(resource, since, after, limit)
            return json_response({"items": items, "next_cursor": encode_cursor(resource, nxt) if nxt else None})
        except ApiFailure as exc:
            return fail(exc)

    async def get_record(request: Request) -> Response:
        try:
            guard(request)
            return json_response(store.get(request.path_params["resource"], request.path_params["id"]))
        except ApiFailure as exc:
            return fail(exc)

    async def create_record(request: Request) -> Response:
        try:
            guard(request)
            key = request.headers.get("idempotency-key")
            if key is not None and not 1 <= len(key) <= 255:
                raise ApiFailure(400, "bad_request", "Idempotency-Key must be 1-255 characters")
            data = parse_json(await read_body(request, sb.body_limit))
            status, body = store.create_idempotent(request.path_params["resource"], data, key)
            return Response(body, status_code=status, media_type="application/json")
        except ApiFailure as exc:
            return fail(exc)

    def if_match(request: Request) -> int | None:
        try:
            return parse_if_match(request.headers.get("if-match"))
        except ValueError as exc:
            raise ApiFailure(400, "bad_request", str(exc)) from None

    async def update_record(request: Request) -> Response:
        try:
            guard(request)
            version = if_match(request)
            data = parse_json(await read_body(request, sb.body_limit))
            p = request.path_params
            return json_response(store.update(p["resource"], p["id"], data, version))
        except ApiFailure as exc:
            return fail(exc)

    async def delete_record(request: Request) -> Response:
        try:
            guard(request)
            version = if_match(request)
            store.delete(request.path_params["resource"], request.path_params["id"], version)
            return Response(status_code=204)
        except ApiFailure as exc:
            return fail(exc)

    def run_op(resource: str, op: Any) -> dict:
        try:
            if not isinstance(op, dict):
                raise validation_failure({"(operation)": "expected an object"})
            kind = op.get("op")
            allowed = {"create": {"op", "idempotency_key", "data"},
                       "update": {"op", "id", "if_version", "data"},
                       "delete": {"op", "id", "if_version"}}.get(kind if isinstance(kind, str) else "")
            if allowed is None:
                raise validation_failure({"op": "must be create, update or delete"})
            unknown = set(op) - allowed
            if unknown:
                raise validation_failure({k: "unknown property" for k in sorted(unknown)})
            if kind == "create":
                key = op.get("idempotency_key")
                if key is not None and not (isinstance(key, str) and 1 <= len(key) <= 255):
                    raise validation_failure({"idempotency_key": "must be a string of 1-255 characters"})
                if "data" not in op:
                    raise validation_failure({"data": "required"})
                status, body = store.create_idempotent(resource, op["data"], key)
                return {"status": status, "record": orjson.loads(body), "error": None}
            rid = op.get("id")
            if not isinstance(rid, str) or not rid:
                raise validation_failure({"id": "required (a record Id)"})
            version = op.get("if_version")
            if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
                raise validation_failure({"if_version": "must be an integer or null"})
            if kind == "update":
                if "data" not in op:
                    raise validation_failure({"data": "required"})
                return {"status": 200, "record": store.update(resource, rid, op["data"], version), "error": None}
            return {"status": 204, "record": store.delete(resource, rid, version), "error": None}
        except ApiFailure as exc:
            return {"status": exc.status, "record": None, "error": exc.body()["error"]}

    async def bulk(request: Request) -> Response:
        try:
            guard(request)
            body = parse_json(await read_body(request, sb.body_limit))
            if not isinstance(body, dict) or set(body) != {"operations"}:
                raise validation_failure({"operations": "required; the body is {\"operations\": [...]}"})
            ops = body["operations"]
            if not isinstance(ops, list) or not 1 <= len(ops) <= MAX_BULK:
                raise validation_failure({"operations": f"must be a list of 1-{MAX_BULK} operations"})
            resource = request.path_params["resource"]
            return json_response({"results": [run_op(resource, op) for op in ops]})
        except ApiFailure as exc:
            return fail(exc)

    async def inject(request: Request) -> Response:
        try:
            data = parse_json(await request.body())
            if not isinstance(data, dict):
                raise ApiFailure(400, "bad_request", "the record must be a JSON object")
            return json_response(store.inject(request.path_params["resource"], data), 201)
        except ApiFailure as exc:
            return fail(exc)

    async def seed(request: Request) -> Response:
        """``POST /_sandbox/seed {"n": N}``: add the deterministic sample records now (a benchmark
        starts its workers first, then gives them the load)."""
        try:
            body = parse_json(await request.body() or b"{}")
            n = body.get("n") if isinstance(body, dict) else None
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ApiFailure(400, "bad_request", 'expected {"n": <positive integer>}')
            await asyncio.to_thread(store.seed, n)
            return json_response(store.counts(), 201)
        except ApiFailure as exc:
            return fail(exc)

    async def openapi(_: Request) -> Response:
        return Response(openapi_bytes(), media_type="application/json")

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return json_response({"error": {"code": code, "message": str(exc.detail)}}, exc.status_code)

    routes = [
        Route(f"{API}/{{resource}}", list_records, methods=["GET"]),
        Route(f"{API}/{{resource}}", create_record, methods=["POST"]),
        Route(f"{API}/{{resource}}/bulk", bulk, methods=["POST"]),
        Route(f"{API}/{{resource}}/{{id}}", get_record, methods=["GET"]),
        Route(f"{API}/{{resource}}/{{id}}", update_record, methods=["PATCH"]),
        Route(f"{API}/{{resource}}/{{id}}", delete_record, methods=["DELETE"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/_sandbox/inject/{resource}", inject, methods=["POST"]),
        Route("/_sandbox/seed", seed, methods=["POST"]),
        *sb.control.routes(sb.extra_stats),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.sandbox = sb
    app.add_middleware(
        SandboxMiddleware, control=sb.control, label=endpoint_label, error_body=injected_error_body
    )
    return app


def run(host: str = "127.0.0.1", port: int = 0, token: str = "sandbox-token", seed: int = 0, *,
        rate_limit: tuple[int, float] | None = (100, 10.0), announce: bool = True) -> None:
    """Serve the sandbox in the foreground until Ctrl-C (``talkstream sandbox customcrm``);
    ``announce``: say where, once (``talkstream run`` says it itself)."""
    from connectors.common.httpserver import free_port, serve

    port = port or free_port(host)
    if announce:
        print(f"Customcrm sandbox: http://{host}:{port}/api/v1", flush=True)
    serve(create_app(token=token, seed=seed, rate_limit=rate_limit), host, port)
