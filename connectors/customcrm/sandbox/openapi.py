"""The Customcrm sandbox's OpenAPI document (``/api/v1/openapi.json``), built from the contract's models."""
from __future__ import annotations

import orjson

from connectors.customcrm.models import DATA_MODELS
from connectors.customcrm.sandbox.store import API, DEFAULT_LIMIT, MAX_BULK, MAX_LIMIT, PREFIXES

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
