"""The Customcrm sandbox's record store (no HTTP): collections, versions, the change feed and its
cursors, uniqueness, idempotency keys; and the errors and helpers the handlers share."""
from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError
from starlette.responses import Response

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

    @staticmethod
    def _existing(coll: Collection, resource: str, rid: str) -> dict:
        old = coll.records.get(rid)
        if old is None:
            raise ApiFailure(404, "not_found", f"no {resource} record with Id {rid!r}")
        return old

    @staticmethod
    def _check_version(old: dict, rid: str, if_version: int | None) -> None:
        """``If-Match``: the write was derived from this version, or it is refused (412)."""
        if if_version is not None and if_version != old["Version"]:
            raise ApiFailure(412, "version_conflict", f"{rid} is at version {old['Version']}, not {if_version}",
                             current_version=old["Version"])

    def update(self, resource: str, rid: str, patch: Any, if_version: int | None) -> dict:
        with self.lock:
            coll = self.collection(resource)
            old = self._existing(coll, resource, rid)
            if old["Deleted"]:
                raise ApiFailure(409, "deleted", f"{rid} is deleted and cannot be changed")
            self._check_version(old, rid, if_version)
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
            old = self._existing(coll, resource, rid)
            if old["Deleted"]:
                return old  # before If-Match: a retried delete must not fail
            self._check_version(old, rid, if_version)
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
