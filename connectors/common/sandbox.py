"""What both sandbox systems share: fault injection, request statistics and
the ``/_sandbox/`` control routes (health, faults, stats).

``SandboxMiddleware`` wraps the sandbox's ASGI app. For every request outside
``/_sandbox/`` it applies the configured faults:

- ``latency_ms``: added before the request runs;
- ``error_rate`` + ``status``: answer with that status instead of running it;
- ``malformed_rate``: run it, then answer with a truncated, unparseable body;
- ``timeout_rate``: hang the request; half of the time *after* running it
  (the "committed but the client never heard" case), half before.

and counts every request by endpoint label and status for ``/_sandbox/stats``.
"""
from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: how long a "timed out" request hangs before the server drops it
HANG_SECONDS = 60.0


@dataclass
class Faults:
    error_rate: float = 0.0
    status: int = 500
    latency_ms: int = 0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    #: how long a "timed out" request hangs (tests set it short)
    hang_seconds: float = HANG_SECONDS

    def active(self) -> bool:
        return bool(self.error_rate or self.latency_ms or self.timeout_rate or self.malformed_rate)


class Stats:
    """Thread-safe request counters: ``{"<label>": {"<status>": n}}``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()

    def add(self, label: str, status: int) -> None:
        with self._lock:
            self._counts[(label, status)] += 1

    def snapshot(self) -> dict:
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (label, status), n in sorted(self._counts.items()):
                out.setdefault(label, {})[str(status)] = n
            total = sum(self._counts.values())
        return {"requests": out, "total": total}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class SandboxControl:
    """Faults + stats of one sandbox, and its ``/_sandbox/*`` routes."""

    def __init__(self, seed: int | None = None) -> None:
        self.faults = Faults()
        self.stats = Stats()
        self.random = random.Random(seed)

    def routes(self, extra_stats: Callable[[], dict] | None = None) -> list[Route]:
        async def health(_: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def set_faults(request: Request) -> Response:
            try:
                body = orjson.loads(await request.body())
                self.faults = Faults(**{**asdict(Faults()), **body})
            except (orjson.JSONDecodeError, TypeError) as exc:
                return JSONResponse(
                    {"error": {"code": "bad_request", "message": f"invalid faults: {exc}"}}, status_code=400
                )
            return JSONResponse(asdict(self.faults))

        async def clear_faults(_: Request) -> Response:
            self.faults = Faults()
            return JSONResponse(asdict(self.faults))

        async def get_stats(_: Request) -> Response:
            data = self.stats.snapshot()
            if extra_stats:
                data.update(extra_stats())
            return JSONResponse(data)

        async def reset_stats(_: Request) -> Response:
            self.stats.reset()
            return Response(status_code=204)

        return [
            Route("/_sandbox/health", health, methods=["GET"]),
            Route("/_sandbox/faults", set_faults, methods=["POST"]),
            Route("/_sandbox/faults", clear_faults, methods=["DELETE"]),
            Route("/_sandbox/stats", get_stats, methods=["GET"]),
            Route("/_sandbox/stats", reset_stats, methods=["DELETE"]),
        ]


class SandboxMiddleware:
    """ASGI middleware applying ``control.faults`` and counting requests.

    ``label(method, path)`` names the endpoint for the stats (e.g. ``"GET /api/v1/orders"``).
    ``error_body(status)`` builds the body of an injected error.
    """

    def __init__(
        self,
        app,
        control: SandboxControl,
        label: Callable[[str, str], str],
        error_body: Callable[[int], tuple[bytes, str]],
    ) -> None:
        self.app = app
        self.control = control
        self.label = label
        self.error_body = error_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/_sandbox/"):
            await self.app(scope, receive, send)
            return
        label = self.label(method, path)
        status_box = {"status": 0}

        async def counting_send(message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        faults = self.control.faults
        rnd = self.control.random
        try:
            if faults.active():
                if faults.latency_ms:
                    await asyncio.sleep(faults.latency_ms / 1000)
                if faults.timeout_rate and rnd.random() < faults.timeout_rate:
                    if rnd.random() < 0.5:
                        # committed, but the client never hears back
                        await self.app(scope, receive, _discard)
                    status_box["status"] = 599  # counted as "timed out"
                    await asyncio.sleep(faults.hang_seconds)
                    return
                if faults.error_rate and rnd.random() < faults.error_rate:
                    body, ctype = self.error_body(faults.status)
                    headers = [(b"content-type", ctype.encode())]
                    if faults.status == 429:
                        headers.append((b"retry-after", b"1"))
                    await counting_send({"type": "http.response.start", "status": faults.status, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
                if faults.malformed_rate and rnd.random() < faults.malformed_rate:
                    await self.app(scope, receive, _discard)
                    await counting_send(
                        {"type": "http.response.start", "status": 200,
                         "headers": [(b"content-type", b"application/json")]}
                    )
                    await send({"type": "http.response.body", "body": b'{"items": [{"Id": "trunc'})
                    return
            await self.app(scope, receive, counting_send)
        finally:
            self.control.stats.add(label, status_box["status"])


async def _discard(message) -> None:
    return None
