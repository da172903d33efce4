"""Async HTTP client of the Customcrm REST API (``docs/contracts/customcrm-api.md``).

Owns the transport concerns: bearer auth (the token is never logged or put
in an error), a client-side rate limit (``aiolimiter``) so a healthy run
never sees ``429``, bounded concurrency, retries with exponential backoff and
jitter for retryable errors only (``stamina``; ``Retry-After`` honoured), and
the translation of every failure into a typed error from
``connectors.common.errors`` (:func:`error_from_response` is pure).

A ``create`` without an ``Idempotency-Key`` gets a generated one, so its
retries can never create a second record.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

import httpx
import orjson
import stamina
from aiolimiter import AsyncLimiter

from connectors.common.errors import (
    ApiError,
    AuthError,
    ConflictError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TimeoutError_,
    ValidationError,
)
from connectors.common.ratelimit import window_limiter
from connectors.customcrm import RESOURCES

log = logging.getLogger(__name__)

API = "/api/v1"


class VersionConflictError(ConflictError):
    """412: ``If-Match`` differs from the record's current ``Version``."""

    def __init__(self, message: str, *, current_version: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.current_version = current_version


class RecordDeletedError(NotFoundError):
    """409 ``deleted``: the record is soft-deleted and cannot be changed (the target is gone)."""


class IdempotencyKeyReusedError(ConflictError):
    """409 ``idempotency_key_reused``: the same key was sent with another body (never retry)."""

    status_kind = "permanent"


# --------------------------------------------------------------------------- pure parts


def _retry_after(headers: Mapping[str, str]) -> float | None:
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def error_from_response(what: str, status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """The typed error for an HTTP error response; ``what`` names the call (e.g. ``PATCH /api/v1/orders/x``)."""
    err: dict[str, Any] = {}
    try:
        parsed = orjson.loads(body) if body else None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            err = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    return error_from_body(what, status, err, headers)


def error_from_body(what: str, status: int, err: Any, headers: Mapping[str, str] | None = None) -> ApiError:
    """The typed error for ``status`` and a parsed ``{"code", "message", ...}`` error object."""
    err = err if isinstance(err, dict) else {}
    headers = headers or {}
    code = err.get("code") if isinstance(err.get("code"), str) else None
    message = err.get("message") if isinstance(err.get("message"), str) else ""
    reason = f"{code}: {message}" if code and message else (code or message or "no error body")
    kw: dict[str, Any] = {"status": status, "code": code, "details": err or None}
    if status == 401:
        return AuthError(f"{what} was refused: bad or missing token ({reason})", **kw)
    if status == 404:
        return NotFoundError(f"{what}: not found ({reason})", **kw)
    if status == 409 and code == "deleted":
        return RecordDeletedError(f"{what}: the record is deleted ({reason})", **kw)
    if status == 409 and code == "idempotency_key_reused":
        return IdempotencyKeyReusedError(f"{what}: Idempotency-Key reused with another body ({reason})", **kw)
    if status == 409:
        return ConflictError(f"{what}: conflict ({reason})", **kw)
    if status == 412:
        current = err.get("current_version")
        current = current if isinstance(current, int) else None
        return VersionConflictError(
            f"{what}: version conflict, the record is now at version {current} ({reason})",
            current_version=current, **kw,
        )
    if status == 422:
        fields = err.get("fields") if isinstance(err.get("fields"), dict) else {}
        listed = "; ".join(f"{k}: {v}" for k, v in fields.items())
        kw["details"] = fields or err or None
        return ValidationError(f"{what}: invalid data ({listed or reason})", **kw)
    if status == 429:
        return RateLimitedError(f"{what}: rate limited ({reason})", retry_after=_retry_after(headers), **kw)
    if status >= 500:
        return ServerError(f"{what}: server error ({reason})", **kw)
    if status == 413:
        return ValidationError(f"{what}: request body too large ({reason})", **kw)
    return ValidationError(f"{what}: rejected with HTTP {status} ({reason})", **kw)


def retry_decision(exc: Exception) -> bool | float:
    """stamina backoff hook: False = give up; True = exponential backoff; a float = wait that long."""
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        return exc.wait()
    return isinstance(exc, ApiError) and exc.retryable


def format_since(value: str | datetime | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("modified_since must be timezone-aware")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _limiter(rate_limit: tuple[int, float] | None) -> AsyncLimiter | None:
    """``rate`` requests per ``period`` seconds, under the server's sliding window."""
    return window_limiter(*rate_limit) if rate_limit is not None else None


# --------------------------------------------------------------------------- client


class CustomcrmClient:
    """``async with CustomcrmClient(url, token) as c: await c.get("orders", "ord_000001")``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        max_concurrency: int = 8,
        rate_limit: tuple[int, float] | None = (90, 10.0),
        timeout: float = 10.0,
        max_attempts: int = 5,
        retry_wait_initial: float = 0.1,
        retry_wait_max: float = 5.0,
        retry_timeout: float | None = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_wait_initial = retry_wait_initial
        self.retry_wait_max = retry_wait_max
        self.retry_timeout = retry_timeout
        self._semaphore = asyncio.Semaphore(max(1, max_concurrency))
        self._limiter = _limiter(rate_limit)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max(max_concurrency, 1) * 2,
                                max_keepalive_connections=max(max_concurrency, 1) * 2),
        )

    def __repr__(self) -> str:  # never shows the token
        return f"CustomcrmClient({self.base_url!r})"

    async def __aenter__(self) -> "CustomcrmClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- transport
    async def _once(self, method: str, path: str, params: dict | None, content: bytes | None,
                    headers: dict | None) -> Any:
        what = f"{method} {path}"
        async with self._semaphore:
            if self._limiter is not None:
                await self._limiter.acquire()
            try:
                resp = await self._http.request(method, path, params=params, content=content, headers=headers)
            except httpx.TimeoutException as exc:
                raise TimeoutError_(
                    f"{what}: no answer within {self.timeout} s (outcome unknown; {type(exc).__name__})"
                ) from None
            except httpx.TransportError as exc:
                raise ServerError(f"{what}: connection failed ({type(exc).__name__}: {exc})") from None
        if resp.status_code >= 400:
            raise error_from_response(what, resp.status_code, resp.content, resp.headers)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise MalformedResponseError(
                f"{what}: unparseable response body with HTTP {resp.status_code} ({exc})", status=resp.status_code
            ) from None

    async def _call(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                    headers: dict | None = None) -> Any:
        content = orjson.dumps(json) if json is not None else None
        if content is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        async for attempt in stamina.retry_context(
            on=retry_decision,
            attempts=self.max_attempts,
            timeout=self.retry_timeout,
            wait_initial=self.retry_wait_initial,
            wait_max=self.retry_wait_max,
            wait_jitter=self.retry_wait_initial,
        ):
            with attempt:
                if attempt.num > 1:
                    log.debug("retrying %s %s (attempt %d)", method, path, attempt.num)
                return await self._once(method, path, params, content, headers)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _resource(name: str) -> str:
        resource = RESOURCES.get(name, name)
        if resource not in RESOURCES.values():
            raise ValueError(f"unknown Customcrm resource {name!r}")
        return resource

    @staticmethod
    def _record(what: str, data: Any) -> dict:
        if not isinstance(data, dict) or not isinstance(data.get("Id"), str):
            raise MalformedResponseError(f"{what}: expected a record, got {type(data).__name__}")
        return data

    # -- API
    async def list_changes(
        self, resource: str, modified_since: str | datetime | None = None, limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[dict], str | None]:
        """One page of the change feed: ``(items, next_cursor)``; ``next_cursor`` is None at the end."""
        resource = self._resource(resource)
        params: dict[str, Any] = {"limit": limit}
        since = format_since(modified_since)
        if since is not None:
            params["modified_since"] = since
        if cursor is not None:
            params["cursor"] = cursor
        path = f"{API}/{resource}"
        data = await self._call("GET", path, params=params)
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("items"), list)
            or not (data.get("next_cursor") is None or isinstance(data.get("next_cursor"), str))
        ):
            raise MalformedResponseError(f"GET {path}: expected {{items: [...], next_cursor}}")
        return data["items"], data["next_cursor"]

    async def get(self, resource: str, id: str) -> dict:
        path = f"{API}/{self._resource(resource)}/{id}"
        return self._record(f"GET {path}", await self._call("GET", path))

    async def create(self, resource: str, data: dict, idempotency_key: str | None = None) -> dict:
        path = f"{API}/{self._resource(resource)}"
        key = idempotency_key or f"talkstream-{uuid.uuid4().hex}"
        return self._record(f"POST {path}", await self._call(
            "POST", path, json=data, headers={"Idempotency-Key": key}))

    async def update(self, resource: str, id: str, patch: dict, if_version: int | None = None) -> dict:
        path = f"{API}/{self._resource(resource)}/{id}"
        headers = {"If-Match": str(if_version)} if if_version is not None else None
        return self._record(f"PATCH {path}", await self._call("PATCH", path, json=patch, headers=headers))

    async def delete(self, resource: str, id: str, if_version: int | None = None) -> None:
        path = f"{API}/{self._resource(resource)}/{id}"
        headers = {"If-Match": str(if_version)} if if_version is not None else None
        await self._call("DELETE", path, headers=headers)

    async def bulk(self, resource: str, operations: list[dict]) -> list[dict]:
        """``POST /{resource}/bulk``: one ``{status, record, error}`` per operation, in order."""
        path = f"{API}/{self._resource(resource)}/bulk"
        data = await self._call("POST", path, json={"operations": operations})
        results = data.get("results") if isinstance(data, dict) else None
        if (
            not isinstance(results, list)
            or len(results) != len(operations)
            or not all(isinstance(r, dict) and isinstance(r.get("status"), int) for r in results)
        ):
            raise MalformedResponseError(
                f"POST {path}: expected {len(operations)} results with a status each"
            )
        return results

