"""The Customcrm sandbox's HTTP side: the Starlette app and its handlers, the rate limiter, ``run()``."""
from __future__ import annotations

import asyncio
import hmac
import math
import threading
import time
from collections import deque
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.common.sandbox import SandboxControl, SandboxMiddleware
from connectors.customcrm.sandbox.openapi import openapi_bytes
from connectors.customcrm.sandbox.store import (API, DEFAULT_LIMIT, MAX_BULK, MAX_LIMIT, ApiFailure, Store,
                                                decode_cursor, encode_cursor, error_response, json_response,
                                                parse_if_match, parse_ts, validation_failure)

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
        rate_limit: tuple[int, float] | None = (100, 10.0), announce: bool = True,
        port_file: str | None = None) -> None:
    """Serve the sandbox in the foreground until Ctrl-C (``talkstream sandbox customcrm``);
    ``announce``: say where, once (``talkstream run`` says it itself); ``port_file``: write the
    port it listens on there (with ``port`` 0, the one the system gave)."""
    from connectors.common.httpserver import serve, write_port_file

    def listening(bound: int) -> None:
        if port_file:
            write_port_file(port_file, bound)
        if announce:
            print(f"Customcrm sandbox: http://{host}:{bound}/api/v1", flush=True)

    serve(create_app(token=token, seed=seed, rate_limit=rate_limit), host, port, listening=listening)
