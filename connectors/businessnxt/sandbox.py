"""The Businessnxt sandbox: a real GraphQL server (graphql-core + Starlette)
following ``docs/contracts/businessnxt-api.md``.

Serves ``/api/graphql-service`` and ``/api/graphql`` (single requests and
batches of up to 32), the OAuth2 client-credentials endpoint
``/connect/token``, rate limits (HTTP 429 per token; in-flight limit per
company as a GraphQL error ``OUTSTANDING_LIMIT_EXCEEDED``), nginx-style 401
pages, signed TableChange webhooks, and the ``/_sandbox/*`` controls (faults,
stats with row counts, ``/_sandbox/config`` for limits and a processing delay).

From code::

    app = create_app(seed=100)                  # state: app.state.sandbox
    with ServerThread(app) as srv:              # connectors.common.httpserver
        url = srv.url + "/api/graphql-service"; token_url = srv.url + "/connect/token"
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import secrets
import time
import uuid
from collections import Counter, OrderedDict, deque
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

import orjson
from graphql import (
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    build_schema,
    execute,
    parse,
    validate,
)
from graphql.language import ast as gast
from graphql.language.ast import OperationType
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from connectors.businessnxt.filters import FilterError
from connectors.businessnxt.sandbox_store import Store, StoreError, TableChange
from connectors.businessnxt.sandbox_webhooks import WebhookDispatcher, sign
from connectors.businessnxt.schema import SDL, TABLES
from connectors.common.sandbox import SandboxControl, SandboxMiddleware

log = logging.getLogger(__name__)

__all__ = ["create_app", "run", "sign"]

MAX_BATCH = 32
GRAPHQL_PATHS = ("/api/graphql-service", "/api/graphql")
SCOPE = "business-graphql-service-api:access-group-based"

HTML_401 = (
    b"<html>\r\n<head><title>401 Authorization Required</title></head>\r\n<body>\r\n"
    b"<center><h1>401 Authorization Required</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)


def _html_error(status: int) -> tuple[bytes, str]:
    reason = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
              503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}.get(status, "Error")
    body = (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            f"</body>\r\n</html>\r\n").encode()
    return body, "text/html"


# --------------------------------------------------------------------------- schema
def _parse_decimal_literal(node: gast.ValueNode, _vars: Any = None) -> float:
    if isinstance(node, (gast.IntValueNode, gast.FloatValueNode, gast.StringValueNode)):
        try:
            return float(node.value)
        except ValueError:
            pass
    raise GraphQLError("Decimal cannot represent a non-numeric value", node)


def _parse_decimal(value: Any) -> float:
    if isinstance(value, bool):
        raise GraphQLError(f"Decimal cannot represent {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise GraphQLError(f"Decimal cannot represent {value!r}") from None


def _serialize_decimal(value: Any) -> Any:
    """Decimals leave as JSON numbers."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return float(value)


def _parse_datetime(value: Any) -> str:
    if not isinstance(value, str):
        raise GraphQLError(f"DateTime must be a string, got {value!r}")
    return value


def _parse_datetime_literal(node: gast.ValueNode, _vars: Any = None) -> str:
    if isinstance(node, gast.StringValueNode):
        return node.value
    raise GraphQLError("DateTime must be a string", node)


def build_graphql_schema(state: "SandboxState") -> GraphQLSchema:
    schema = build_schema(SDL)
    dec = schema.type_map["Decimal"]
    dec.serialize = _serialize_decimal  # type: ignore[attr-defined]
    dec.parse_value = _parse_decimal  # type: ignore[attr-defined]
    dec.parse_literal = _parse_decimal_literal  # type: ignore[attr-defined]
    dt = schema.type_map["DateTime"]
    dt.serialize = lambda v: v  # type: ignore[attr-defined]
    dt.parse_value = _parse_datetime  # type: ignore[attr-defined]
    dt.parse_literal = _parse_datetime_literal  # type: ignore[attr-defined]

    def use_company(_root, _info, no: int):
        if no != state.company:
            raise GraphQLError(f"Company {no} does not exist or you do not have access to it.")
        return {}

    schema.query_type.fields["useCompany"].resolve = use_company
    schema.mutation_type.fields["useCompany"].resolve = use_company

    store = state.store
    q = schema.type_map["Query_UseCompany"]
    m = schema.type_map["Mutation_UseCompany"]

    def guard(fn):
        def wrapped(*a, **kw):
            try:
                return fn(*a, **kw)
            except (StoreError, FilterError) as exc:
                raise GraphQLError(str(exc)) from None
        return wrapped

    for tname in TABLES:
        q.fields[tname].resolve = guard(lambda _o, _i, _t=tname, **kw: store.query(_t, **kw))
        m.fields[f"{tname}_create"].resolve = guard(
            lambda _o, _i, values, _t=tname: _result(store.create(_t, values)))
        m.fields[f"{tname}_update"].resolve = guard(
            lambda _o, _i, _t=tname, **kw: _result(store.update(_t, **kw)))
        m.fields[f"{tname}_delete"].resolve = guard(
            lambda _o, _i, _t=tname, **kw: {"affectedRows": store.delete(_t, kw.get("filter")), "items": None})

    schema.type_map["Order"].fields["joindown_OrderLine_via_Order"].resolve = guard(
        lambda order, _i, **kw: store.query("orderLine", parent=order["orderNo"], **kw))
    return schema


def _never_awaitable(_value: Any) -> bool:
    """Every resolver here is synchronous: graphql-core need not inspect each value it returns."""
    return False


def _dict_field(source: Any, info: Any, **_args: Any) -> Any:
    """Every object here is a dict (a row or a result): its field is its key."""
    return source.get(info.field_name)


def _result(rows: list[dict]) -> dict:
    return {"affectedRows": len(rows), "items": rows}


# --------------------------------------------------------------------------- state
class SandboxState:
    """Everything one sandbox instance holds (``app.state.sandbox``)."""

    def __init__(self, *, client_id: str, client_secret: str, company: int, seed: int, timezone: str,
                 rate_limit_per_min: int | None, max_in_flight: int, token_ttl: float,
                 webhook_url: str | None, webhook_key: str | None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.company = company
        self.timezone = timezone
        self.rate_limit_per_min = rate_limit_per_min
        self.max_in_flight = max_in_flight
        self.token_ttl = token_ttl
        self.work_delay = 0.0  # seconds every GraphQL request spends "in progress"
        self.tokens: dict[str, float] = {}  # token -> expiry (time.time())
        self.requests: dict[str, deque] = {}
        self.in_flight = 0
        self.mutations = 0
        self.store = Store(tz=timezone)
        if seed:
            self.store.seed(seed)
        # rows written (inserted, updated, deleted) per table and key: writes per edit, echoes
        self.row_writes: dict[str, Counter] = {}
        self.store.listeners.append(self._count_row_writes)
        self.control = SandboxControl(seed=seed)
        self.webhooks: WebhookDispatcher | None = None
        if webhook_url and webhook_key:
            self.webhooks = WebhookDispatcher(webhook_url, webhook_key, company)
            self.store.listeners.append(self.webhooks.enqueue)
        self.schema = build_graphql_schema(self)
        self._docs: OrderedDict[str, Any] = OrderedDict()

    # ---- auth / limits -----------------------------------------------------
    def issue_token(self) -> str:
        tok = secrets.token_urlsafe(32)
        now = time.time()
        self.tokens = {t: e for t, e in self.tokens.items() if e > now}
        self.tokens[tok] = now + self.token_ttl
        return tok

    def token_valid(self, auth: str | None) -> str | None:
        if not auth or not auth.lower().startswith("bearer "):
            return None
        tok = auth[7:].strip()
        exp = self.tokens.get(tok)
        if exp is None or exp <= time.time():
            return None
        return tok

    def expire_tokens(self) -> None:
        """Test helper: every issued token expires now."""
        self.tokens = {t: 0.0 for t in self.tokens}

    def rate_limited(self, token: str) -> bool:
        if not self.rate_limit_per_min:
            return False
        now = time.monotonic()
        q = self.requests.setdefault(token, deque())
        while q and q[0] <= now - 60.0:
            q.popleft()
        if len(q) >= self.rate_limit_per_min:
            return True
        q.append(now)
        return False

    # ---- graphql -----------------------------------------------------------
    def _document(self, query: str):
        hit = self._docs.get(query)
        if hit is not None:
            self._docs.move_to_end(query)
            return hit
        try:
            doc = parse(query)
        except GraphQLError as exc:
            hit = (None, [exc])
        else:
            errors = validate(self.schema, doc)
            hit = (doc, errors) if errors else (doc, [])
        self._docs[query] = hit
        if len(self._docs) > 512:
            self._docs.popitem(last=False)
        return hit

    def run_one(self, req: Any) -> dict:
        if not isinstance(req, dict) or not isinstance(req.get("query"), str):
            return {"errors": [{"message": "Request must be an object with a 'query' string."}]}
        doc, errors = self._document(req["query"])
        if errors:
            return {"errors": [e.formatted for e in errors]}
        variables = req.get("variables") or None
        if any(getattr(d, "operation", None) == OperationType.MUTATION for d in doc.definitions):
            self.mutations += 1  # counted for tests and benchmarks (writes per edit)
        with self.store.lock:
            result: ExecutionResult = execute(  # type: ignore[assignment]
                self.schema, doc, variable_values=variables, operation_name=req.get("operationName"),
                is_awaitable=_never_awaitable, field_resolver=_dict_field)
        out: dict[str, Any] = {}
        if result.errors:
            out["errors"] = [e.formatted for e in result.errors]
        out["data"] = result.data
        out["extensions"] = {"vbnxt-trace-id": uuid.uuid4().hex}
        return out

    def execute(self, query: str, variables: dict | None = None) -> dict:
        """Run one GraphQL operation in-process, as a person working in the ERP
        (no HTTP, auth or limits; webhooks fire as for API changes). Thread-safe."""
        return self.run_one({"query": query, "variables": variables or {}})

    def _count_row_writes(self, changes: list[TableChange]) -> None:
        for change in changes:
            key = ",".join(str(v) for v in change.keys.values())
            self.row_writes.setdefault(change.table, Counter())[key] += 1

    def stats(self) -> dict:
        extra = {"rows": {t: self.store.count(t) for t in TABLES}, "in_flight": self.in_flight,
                 "mutations": self.mutations,
                 "row_writes": {t: sum(c.values()) for t, c in self.row_writes.items()}}
        if self.webhooks:
            w = self.webhooks
            extra["webhooks"] = {"pending": w.pending, "delivered": w.delivered,
                                 "failed_attempts": w.failed_attempts, "dropped": w.dropped}
        return extra


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def create_app(*, client_id: str = "sandbox-client", client_secret: str = "sandbox-secret", company: int = 1,
               seed: int = 0, timezone: str = "Europe/Oslo", rate_limit_per_min: int | None = 600,
               max_in_flight: int = 60, token_ttl: float = 3600, webhook_url: str | None = None,
               webhook_key: str | None = None) -> Starlette:
    state = SandboxState(client_id=client_id, client_secret=client_secret, company=company, seed=seed,
                         timezone=timezone, rate_limit_per_min=rate_limit_per_min,
                         max_in_flight=max_in_flight, token_ttl=token_ttl,
                         webhook_url=webhook_url, webhook_key=webhook_key)

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(auth[6:]).decode().partition(":")
                form.setdefault("client_id", cid)
                form.setdefault("client_secret", sec)
            except Exception:
                pass
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        if not (hmac.compare_digest(form.get("client_id", ""), state.client_id)
                and hmac.compare_digest(form.get("client_secret", ""), state.client_secret)):
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        return JSONResponse({"access_token": state.issue_token(), "expires_in": int(state.token_ttl),
                             "token_type": "Bearer", "scope": form.get("scope") or SCOPE})

    async def graphql(request: Request) -> Response:
        tok = state.token_valid(request.headers.get("authorization"))
        if tok is None:
            return HTMLResponse(HTML_401, status_code=401)
        if state.rate_limited(tok):
            body, ctype = _html_error(429)
            return Response(body, status_code=429, media_type=ctype, headers={"retry-after": "1"})
        try:
            payload = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return _json({"errors": [{"message": "Request body is not valid JSON."}]}, 400)
        if state.in_flight >= state.max_in_flight:
            n = state.company
            return _json({"errors": [{
                "message": f"Company {n} has {state.in_flight} requests in progress. Limit is {state.max_in_flight}.",
                "extensions": {"code": "OUTSTANDING_LIMIT_EXCEEDED"}}], "data": None})
        state.in_flight += 1
        try:
            if state.work_delay:
                await asyncio.sleep(state.work_delay)
            if isinstance(payload, list):
                if len(payload) > MAX_BATCH:
                    return _json({"errors": [{
                        "message": f"Batch of {len(payload)} requests exceeds the limit of {MAX_BATCH}.",
                        "extensions": {"code": "BATCH_LIMIT_EXCEEDED"}}], "data": None})
                return _json([state.run_one(r) for r in payload])
            return _json(state.run_one(payload))
        finally:
            state.in_flight -= 1

    async def config(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return JSONResponse({"error": "invalid JSON"}, status_code=400)
        if "work_delay_ms" in body:
            state.work_delay = float(body["work_delay_ms"]) / 1000
        for name in ("max_in_flight", "rate_limit_per_min", "token_ttl"):
            if name in body:
                setattr(state, name, body[name])
        if body.get("expire_tokens"):
            state.expire_tokens()
        return JSONResponse({"work_delay_ms": state.work_delay * 1000, "max_in_flight": state.max_in_flight,
                             "rate_limit_per_min": state.rate_limit_per_min, "token_ttl": state.token_ttl})

    async def row_writes(request: Request) -> Response:
        """Writes per row of one table (``GET /_sandbox/row-writes/order``): key -> count."""
        return JSONResponse(dict(state.row_writes.get(request.path_params["table"], {})))

    @asynccontextmanager
    async def lifespan(_app):
        if state.webhooks is not None:
            state.webhooks.start()
        try:
            yield
        finally:
            if state.webhooks is not None:
                await state.webhooks.aclose()

    routes = [Route(p, graphql, methods=["POST"]) for p in GRAPHQL_PATHS]
    routes.append(Route("/connect/token", token, methods=["POST"]))
    routes.append(Route("/_sandbox/config", config, methods=["POST"]))
    routes.append(Route("/_sandbox/row-writes/{table}", row_writes, methods=["GET"]))
    routes += state.control.routes(extra_stats=state.stats)
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = state
    app.add_middleware(SandboxMiddleware, control=state.control,
                       label=lambda method, path: f"{method} {path}", error_body=_html_error)
    return app


def run(host: str = "127.0.0.1", port: int = 0, client_id: str = "sandbox-client",
        client_secret: str = "sandbox-secret", company: int = 1, seed: int = 0,
        webhook_url: str | None = None, webhook_key: str | None = None,
        timezone: str = "Europe/Oslo", announce: bool = True, port_file: str | None = None) -> None:
    """Serve the sandbox in the foreground (``talkstream sandbox businessnxt``); ``announce``: say
    where, once (``talkstream run`` says it itself); ``port_file``: write the port it listens on
    there (with ``port`` 0, the one the system gave)."""
    from connectors.common.httpserver import serve, write_port_file

    def listening(bound: int) -> None:
        if port_file:
            write_port_file(port_file, bound)
        if announce:
            print(f"Businessnxt sandbox: http://{host}:{bound}/api/graphql-service "
                  f"(token: http://{host}:{bound}/connect/token, company {company})", flush=True)

    serve(create_app(client_id=client_id, client_secret=client_secret, company=company, seed=seed,
                     timezone=timezone, webhook_url=webhook_url, webhook_key=webhook_key), host, port,
          listening=listening)
