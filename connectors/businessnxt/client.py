"""Async Business NXT GraphQL client (httpx): OAuth2 client-credentials token
cache (refreshed before expiry and once on a 401), typed errors, retries with
backoff + jitter (stamina) for retryable failures only, a request-rate limiter
(aiolimiter) under the 600/min server limit, a concurrency cap under the
60-in-flight company limit, and row helpers (batched create / update, reads
by key or filter with paging). Every operation goes through one
``requestline.RequestLine``: operations that wait for the limiter or a
connection slot leave together, as one HTTP batch.

Mutations are retried only when the server certainly did not run them (429,
OUTSTANDING_LIMIT_EXCEEDED, connection refused); a mutation whose outcome is
unknown (timeout, 5xx, unparseable answer) raises, so the caller can look up
what was committed first (see ``writer``). Tokens and the client secret are
never logged.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Sequence

import httpx
import orjson
import stamina

from connectors.businessnxt.requestline import RequestLine
from connectors.businessnxt.schema import TABLES
from connectors.common.errors import (
    ApiError,
    AuthError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    TimeoutError_,
    ValidationError,
)
from connectors.common.ratelimit import window_limiter

log = logging.getLogger(__name__)

SCOPE = "business-graphql-service-api:access-group-based"
MAX_BATCH = 32
MAX_PAGE = 5000


class GraphQLRequestError(ValidationError):
    """The server answered with GraphQL ``errors`` (permanent): message and path of the first."""

    def __init__(self, message: str, *, path: list | None = None, code: str | None = None,
                 errors: list | None = None, status: int | None = 200) -> None:
        super().__init__(message, status=status, code=code, details=errors)
        self.path = path
        self.errors = errors or []


class OutstandingLimitError(ServerError):
    """Too many requests in progress for the company (not run; retryable)."""


class ConnectionFailedError(ServerError):
    """No connection could be made: the request was not sent (retryable)."""


def outcome_unknown(exc: BaseException) -> bool:
    """Did the server possibly run the request although we got no answer?"""
    if isinstance(exc, (OutstandingLimitError, ConnectionFailedError, RateLimitedError)):
        return False
    if isinstance(exc, (TimeoutError_, MalformedResponseError)):
        return True
    return isinstance(exc, ServerError)


def table_fields(table: str, *, with_lines: bool = True) -> str:
    """Selection set of every contract field of a table (orders with their lines)."""
    t = TABLES[table]
    fields = " ".join(t.fields)
    if table == "order" and with_lines:
        fields += " joindown_OrderLine_via_Order(first: %d) { items { %s } }" % (
            MAX_PAGE, " ".join(TABLES["orderLine"].fields))
    return fields


def flatten_order(row: dict) -> dict:
    """``joindown_OrderLine_via_Order.items`` -> ``orderLines`` (the shape talkstream publishes)."""
    if row is None or "joindown_OrderLine_via_Order" not in row:
        return row
    out = {k: v for k, v in row.items() if k != "joindown_OrderLine_via_Order"}
    out["orderLines"] = list((row["joindown_OrderLine_via_Order"] or {}).get("items") or [])
    return out


class BusinessnxtClient:
    def __init__(self, url: str, token_url: str, client_id: str, client_secret: str, company: int, *,
                 max_concurrency: int = 16, rate_limit_per_min: int = 540, timeout: float = 30.0,
                 max_attempts: int = 5, backoff_initial: float = 0.1, backoff_max: float = 5.0,
                 scope: str = SCOPE, http: httpx.AsyncClient | None = None) -> None:
        if max_concurrency >= 60:
            raise ValueError("max_concurrency must stay under the server's 60 in-flight limit")
        self.url = url
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.company = company
        self.scope = scope
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._http = http or httpx.AsyncClient(timeout=timeout,
                                               limits=httpx.Limits(max_connections=max_concurrency + 4))
        self._own_http = http is None
        self._limiter = window_limiter(rate_limit_per_min, 60) if rate_limit_per_min else None
        self._line = RequestLine(self._post_once, slots=max_concurrency, limiter=self._limiter)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0

    def __repr__(self) -> str:  # never show credentials
        return f"BusinessnxtClient(url={self.url!r}, company={self.company}, client_id={self.client_id!r})"

    async def __aenter__(self) -> "BusinessnxtClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    @property
    def http_requests(self) -> int:
        """GraphQL HTTP requests sent (a batch counts once)."""
        return self._line.requests

    async def aclose(self) -> None:
        await self._line.aclose()
        if self._own_http:
            await self._http.aclose()

    # ---- token ---------------------------------------------------------------
    async def _get_token(self, *, force: bool = False, stale: str | None = None) -> str:
        async with self._token_lock:
            now = time.monotonic()
            if self._token and not force and now < self._token_expiry:
                return self._token
            if force and stale is not None and self._token != stale and now < self._token_expiry:
                return self._token  # someone else refreshed meanwhile
            try:
                r = await self._http.post(self.token_url, data={
                    "grant_type": "client_credentials", "client_id": self.client_id,
                    "client_secret": self._secret, "scope": self.scope}, timeout=self.timeout)
            except httpx.TimeoutException:
                raise TimeoutError_("token request timed out") from None
            except httpx.HTTPError as exc:
                raise ConnectionFailedError(f"token request failed: {type(exc).__name__}") from None
            if r.status_code >= 500 or r.status_code == 429:
                raise ServerError("token endpoint unavailable", status=r.status_code)
            if r.status_code != 200:
                raise AuthError("token request rejected (check client id / secret)", status=r.status_code)
            try:
                body = r.json()
                token = body["access_token"]
                ttl = float(body.get("expires_in", 3600))
            except Exception:
                raise MalformedResponseError("token response is not valid JSON", status=r.status_code) from None
            self.token_fetches += 1
            self._token = token
            # refresh a little before expiry (10 % of the lifetime, at most 60 s)
            self._token_expiry = time.monotonic() + ttl - min(60.0, ttl * 0.1)
            log.info("businessnxt: obtained access token (expires in %.0f s)", ttl)
            return token

    # ---- transport -------------------------------------------------------------
    async def _post_once(self, payload: Any) -> Any:
        """One HTTP request; the request line holds its rate-limit token and connection slot."""
        token = await self._get_token()
        for attempt in (1, 2):
            if attempt == 2 and self._limiter is not None:
                await self._limiter.acquire()  # the retry after a refreshed token is another request
            try:
                r = await self._http.post(self.url, content=orjson.dumps(payload), headers={
                    "authorization": f"Bearer {token}", "content-type": "application/json"})
            except httpx.ConnectError:
                raise ConnectionFailedError("cannot connect to Business NXT") from None
            except (httpx.ConnectTimeout, httpx.PoolTimeout):
                raise ConnectionFailedError("connect timeout to Business NXT (not sent)") from None
            except httpx.TimeoutException:
                raise TimeoutError_(f"no answer within {self.timeout} s (outcome unknown)") from None
            except httpx.HTTPError as exc:
                raise TimeoutError_(f"connection broken: {type(exc).__name__} (outcome unknown)") from None
            if r.status_code == 401:
                if attempt == 1:
                    token = await self._get_token(force=True, stale=token)
                    continue
                raise AuthError("unauthorized (token rejected after refresh)", status=401)
            break
        if r.status_code == 429:
            ra = r.headers.get("retry-after")
            try:
                retry_after = float(ra) if ra else None
            except ValueError:
                retry_after = None
            raise RateLimitedError("rate limited (600 requests/min per token)", status=429, retry_after=retry_after)
        if r.status_code >= 500:
            raise ServerError("server error", status=r.status_code)
        try:
            body = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            raise MalformedResponseError("response is not valid JSON", status=r.status_code) from None
        if r.status_code != 200:
            msg = (body.get("errors") or [{}])[0].get("message") if isinstance(body, dict) else None
            raise GraphQLRequestError(msg or f"HTTP {r.status_code}", status=r.status_code)
        return body

    @staticmethod
    def _check(body: Any) -> Any:
        if not isinstance(body, dict):
            raise MalformedResponseError("response is not a GraphQL result object")
        errors = body.get("errors")
        if errors:
            first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
            code = (first.get("extensions") or {}).get("code")
            if code == "OUTSTANDING_LIMIT_EXCEEDED":
                raise OutstandingLimitError(first.get("message", code), status=200, code=code)
            raise GraphQLRequestError(first.get("message", "GraphQL error"), path=first.get("path"),
                                      code=code, errors=errors)
        if "data" not in body:
            raise MalformedResponseError("response has neither data nor errors")
        return body["data"]

    async def _retrying(self, fn, safe: bool):
        def retry_on(exc: Exception) -> bool | float:
            if not isinstance(exc, ApiError) or not exc.retryable:
                return False
            if not safe and outcome_unknown(exc):
                return False
            if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
                return exc.wait()  # the server said when
            return True

        async for attempt in stamina.retry_context(
            on=retry_on, attempts=self.max_attempts, timeout=None,
            wait_initial=self.backoff_initial, wait_max=self.backoff_max, wait_jitter=self.backoff_initial,
        ):
            with attempt:
                return await fn()

    async def query(self, query: str, variables: dict | None = None, *, operation_name: str | None = None,
                    retry: bool | None = None) -> dict:
        """Run one query or mutation; returns ``data`` or raises an ``ApiError``.

        ``retry``: ``None`` = retry every retryable failure of a query, and
        only not-run failures of a mutation; ``False`` = no retries.
        """
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if operation_name:
            payload["operationName"] = operation_name
        safe = not query.lstrip().startswith("mutation") if retry is None else retry

        async def once():
            return self._check(await self._line.submit(payload))

        if retry is False:
            return await once()
        return await self._retrying(once, safe)

    async def batch(self, requests: Sequence[tuple[str, dict | None]]) -> list[dict | ApiError]:
        """Several queries in one HTTP request (<= 32): ``data`` or the error of each."""
        if len(requests) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} requests per batch")
        payload = [{"query": q, "variables": v or {}} for q, v in requests]
        safe = all(not q.lstrip().startswith("mutation") for q, _ in requests)

        async def once():
            # each operation waits in the line: they usually leave in one request, but may not
            answers = await asyncio.gather(*(self._line.submit(item) for item in payload),
                                           return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer  # the request failed: the whole batch is retried or fails
            out: list[dict | ApiError] = []
            for answer in answers:
                try:
                    out.append(self._check(answer))
                except ApiError as exc:
                    out.append(exc)
            return out

        return await self._retrying(once, safe)

    # ---- row helpers -----------------------------------------------------------
    async def iter_pages(self, table: str, *, filter: dict | None = None, order_by: list | None = None,
                         page_size: int = 500, fields: str | None = None) -> AsyncIterator[list[dict]]:
        """Every matching row, one page at a time, following ``endCursor``."""
        t = TABLES[table]
        q = ("query Read($cid: Int!, $f: FilterExpression_%s, $o: [OrderBy_%s], $n: Int, $a: String) "
             "{ useCompany(no: $cid) { %s(filter: $f, orderBy: $o, first: $n, after: $a) "
             "{ totalCount pageInfo { hasNextPage endCursor } items { %s } } } }"
             % (t.type_name, t.type_name, table, fields or table_fields(table)))
        after = None
        while True:
            data = await self.query(q, {"cid": self.company, "f": filter, "o": order_by,
                                        "n": min(page_size, MAX_PAGE), "a": after})
            conn = data["useCompany"][table]
            items = conn["items"] or []
            yield [flatten_order(r) for r in items] if table == "order" else items
            if not conn["pageInfo"]["hasNextPage"] or not items:
                return
            after = conn["pageInfo"]["endCursor"]

    def _page_request(self, table: str, *, filter: dict | None = None, order_by: list | None = None,
                      first: int = 500, fields: str | None = None) -> tuple[str, dict]:
        t = TABLES[table]
        q = ("query ReadPage($cid: Int!, $f: FilterExpression_%s, $o: [OrderBy_%s], $n: Int) "
             "{ useCompany(no: $cid) { %s(filter: $f, orderBy: $o, first: $n) { items { %s } } } }"
             % (t.type_name, t.type_name, table, fields or table_fields(table)))
        return q, {"cid": self.company, "f": filter, "o": order_by, "n": min(first, MAX_PAGE)}

    @staticmethod
    def _page_items(table: str, data: dict) -> list[dict]:
        items = data["useCompany"][table]["items"] or []
        return [flatten_order(r) for r in items] if table == "order" else items

    async def read(self, table: str, *, filter: dict | None = None, order_by: list | None = None,
                   first: int = 500, fields: str | None = None) -> list[dict]:
        """One page (no cursor): the first ``first`` matching rows."""
        data = await self.query(*self._page_request(table, filter=filter, order_by=order_by, first=first,
                                                    fields=fields))
        return self._page_items(table, data)

    async def read_many(self, reads: Sequence[tuple[str, dict]]) -> list[list[dict]]:
        """Several ``read``s (``(table, read keyword arguments)``) in one HTTP request."""
        answers = await self.batch([self._page_request(table, **kw) for table, kw in reads])
        for answer in answers:
            if isinstance(answer, ApiError):
                raise answer
        return [self._page_items(table, data) for (table, _kw), data in zip(reads, answers)]

    async def read_all(self, table: str, *, filter: dict | None = None, order_by: list | None = None,
                       page_size: int = 500, fields: str | None = None) -> list[dict]:
        out: list[dict] = []
        async for page in self.iter_pages(table, filter=filter, order_by=order_by, page_size=page_size,
                                          fields=fields):
            out.extend(page)
        return out

    async def read_by_values(self, table: str, field: str, values: Sequence[Any], *,
                             fields: str | None = None, chunk: int = 500) -> list[dict]:
        """Rows whose ``field`` is one of ``values`` (``_in``, chunked)."""
        out: list[dict] = []
        vals = list(dict.fromkeys(v for v in values if v is not None))
        for i in range(0, len(vals), chunk):
            out += await self.read_all(table, filter={field: {"_in": vals[i:i + chunk]}}, fields=fields,
                                       page_size=MAX_PAGE)
        return out

    async def read_by_keys(self, table: str, keys: Sequence[Any], *, fields: str | None = None) -> dict[Any, dict]:
        """Rows by primary key (single-column keys: order, product) -> {key: row}."""
        key = TABLES[table].key[0]
        return {r[key]: r for r in await self.read_by_values(table, key, keys, fields=fields)}

    async def create(self, table: str, values: Sequence[dict], *, fields: str | None = None) -> list[dict]:
        """One ``<table>_create(values: [...])`` call; returns the created rows in order."""
        t = TABLES[table]
        q = ("mutation Create($cid: Int!, $v: [%s_Input!]!) { useCompany(no: $cid) "
             "{ %s_create(values: $v) { affectedRows items { %s } } } }"
             % (t.type_name, table, fields or table_fields(table)))
        data = await self.query(q, {"cid": self.company, "v": list(values)})
        res = data["useCompany"][f"{table}_create"]
        items = res["items"] or []
        return [flatten_order(r) for r in items] if table == "order" else items

    async def update(self, table: str, filters: Sequence[dict], values: Sequence[dict], *,
                     fields: str | None = None) -> list[dict]:
        """One ``<table>_update(filters: [...], values: [...])`` call (parallel arrays)."""
        t = TABLES[table]
        q = ("mutation Update($cid: Int!, $f: [FilterExpression_%s!], $v: [%s_Input!]) { useCompany(no: $cid) "
             "{ %s_update(filters: $f, values: $v) { affectedRows items { %s } } } }"
             % (t.type_name, t.type_name, table, fields or table_fields(table)))
        data = await self.query(q, {"cid": self.company, "f": list(filters), "v": list(values)})
        items = data["useCompany"][f"{table}_update"]["items"] or []
        return [flatten_order(r) for r in items] if table == "order" else items

    async def update_where(self, table: str, filter: dict, value: dict, *, fields: str | None = None) -> list[dict]:
        """One ``<table>_update(filter:, value:)`` call (one change to every matching row)."""
        t = TABLES[table]
        q = ("mutation UpdateWhere($cid: Int!, $f: FilterExpression_%s, $v: %s_Input) { useCompany(no: $cid) "
             "{ %s_update(filter: $f, value: $v) { affectedRows items { %s } } } }"
             % (t.type_name, t.type_name, table, fields or table_fields(table)))
        data = await self.query(q, {"cid": self.company, "f": filter, "v": value})
        items = data["useCompany"][f"{table}_update"]["items"] or []
        return [flatten_order(r) for r in items] if table == "order" else items

    async def delete(self, table: str, filter: dict) -> int:
        t = TABLES[table]
        q = ("mutation Delete($cid: Int!, $f: FilterExpression_%s) { useCompany(no: $cid) "
             "{ %s_delete(filter: $f) { affectedRows } } }" % (t.type_name, table))
        data = await self.query(q, {"cid": self.company, "f": filter})
        return data["useCompany"][f"{table}_delete"]["affectedRows"]
