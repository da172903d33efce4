"""The Business NXT sandbox's webhooks: signed TableChange events, delivered in commit order per row,
retried with backoff (``x-vwd-signature-v1``: base64 of HMAC-SHA256 over the raw body)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import threading
from collections import deque

import httpx
import orjson

from connectors.businessnxt.sandbox_store import TableChange
from connectors.businessnxt.timezones import format_utc

log = logging.getLogger("connectors.businessnxt.sandbox")


def sign(body: bytes, key: str) -> str:
    """``x-vwd-signature-v1``: base64 of HMAC-SHA256 over the raw body."""
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


class WebhookDispatcher:
    """Delivers signed TableChange events asynchronously, in commit order per row
    (rows are spread over a few lanes by order/product key), retrying non-2xx
    with exponential backoff."""

    LANES = 4

    def __init__(self, url: str, key: str, company: int, *, max_attempts: int = 30) -> None:
        self.url = url
        self.key = key
        self.company = company
        self.max_attempts = max_attempts
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queues: list[asyncio.Queue] = []
        self.tasks: list[asyncio.Task] = []
        self.client: httpx.AsyncClient | None = None
        self.delivered = 0
        self.failed_attempts = 0
        self.dropped = 0
        self.enqueued = 0  # changed under the store lock only
        self.finished = 0  # changed on the sender's loop only
        self._outbox: deque[TableChange] = deque()
        self._thread: int | None = None

    def start(self) -> None:
        """Start the sender on the running loop (the app's lifespan does this)."""
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.client = httpx.AsyncClient(timeout=5.0)
        self.queues = [asyncio.Queue() for _ in range(self.LANES)]
        self.tasks = [self.loop.create_task(self._run(q)) for q in self.queues]
        self._drain()

    def enqueue(self, changes: list[TableChange]) -> None:
        """Called by the store inside its lock, so the outbox is in commit order;
        the lanes are fed on the sender's loop only."""
        self._outbox.extend(changes)
        self.enqueued += len(changes)
        if self.loop is None:
            return  # drained when the sender starts
        if threading.get_ident() == self._thread:
            self._drain()
        else:
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        while self._outbox:
            c = self._outbox.popleft()
            body = orjson.dumps({
                "tableIdentifier": c.table, "customerNo": 0, "companyNo": self.company,
                "event": c.event, "primaryKeys": [c.keys], "timestamp": format_utc(c.timestamp),
            })
            lane_key = c.keys.get("orderNo", c.keys.get("productNo"))
            self.queues[hash((c.table == "product", lane_key)) % self.LANES].put_nowait(body)

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            body = await queue.get()
            try:
                await self._deliver(body)
            finally:
                self.finished += 1

    async def _deliver(self, body: bytes) -> None:
        headers = {"content-type": "application/json", "x-vwd-signature-v1": sign(body, self.key)}
        delay = 0.05
        for _attempt in range(self.max_attempts):
            try:
                assert self.client is not None
                r = await self.client.post(self.url, content=body, headers=headers)
                if 200 <= r.status_code < 300:
                    self.delivered += 1
                    return
            except httpx.HTTPError:
                pass
            self.failed_attempts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        self.dropped += 1
        log.error("webhook delivery to %s given up after %d attempts", self.url, self.max_attempts)

    @property
    def pending(self) -> int:
        """Events committed but not yet delivered (or given up)."""
        return self.enqueued - self.finished

    async def aclose(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self.client is not None:
            await self.client.aclose()
