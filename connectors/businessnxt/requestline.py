"""The line Business NXT requests wait in: whatever waits leaves together, as one HTTP batch.

Business NXT limits each token to 600 requests a minute, counted at its gateway
before a request reaches the GraphQL service, and it answers a JSON array of up
to 32 GraphQL operations in one HTTP request (in order, each with its own
``data`` / ``errors``). Its callers in a worker (two sinks, the pollers, the
webhook receiver) each wait for their own answer before they send their next
operation, so two waiting operations never depend on each other.

So every operation joins one line. A request leaves when the rate limiter gives
a token and a connection slot is free; it carries every operation waiting then
(up to 32). Nothing is held back to fill a batch: with tokens and slots free, an
operation leaves at once, alone, as a plain request. Under the rate limit,
though, the operations that queued behind it share one request instead of
spending one each (measured in ``bench``: the rate-limited initial load).

A failure of the whole request (429, 5xx, timeout, a broken answer) is every
member's failure, and each caller's own retry policy decides what to do with it
(a mutation whose outcome is unknown is never retried blindly; see ``client``).
An operation's GraphQL errors are its own. We assume, as our sandbox does, that
the gateway counts a batch as one request: its documentation says the limit is
checked per request at the gateway, and says nothing of batches.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiolimiter import AsyncLimiter

from connectors.common.errors import MalformedResponseError

log = logging.getLogger(__name__)

#: Operations per HTTP request that Business NXT accepts.
MAX_OPERATIONS = 32


class RequestLine:
    """Sends each submitted GraphQL operation, several per HTTP request when they wait together.

    ``send(payload)`` posts one HTTP request (an operation object, or a list of them) and
    returns the decoded answer or raises; the line holds the rate limiter token and the
    connection slot while it runs.
    """

    def __init__(self, send: Callable[[Any], Awaitable[Any]], *, slots: int,
                 limiter: AsyncLimiter | None = None, max_operations: int = MAX_OPERATIONS) -> None:
        self._send = send
        self._limiter = limiter
        self._slots_count = slots
        self._slots: asyncio.Semaphore | None = None
        self._max = max_operations
        self._waiting: deque[tuple[Any, asyncio.Future]] = deque()
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None
        self._sending: set[asyncio.Task] = set()
        self.requests = 0  # HTTP requests sent
        self.operations = 0  # operations they carried

    async def submit(self, operation: dict) -> Any:
        """The answer to one operation (its ``{"data", "errors"}`` object), or the request's error."""
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done() or self._dispatcher.get_loop() is not loop:
            self._slots = asyncio.Semaphore(self._slots_count)
            self._wake = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch(), name="businessnxt-request-line")
        future = loop.create_future()
        self._waiting.append((operation, future))
        self._wake.set()
        return await future

    async def aclose(self) -> None:
        """Stop sending; operations still waiting fail."""
        tasks = [t for t in (self._dispatcher, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RuntimeError("Business NXT client closed"))

    def _take(self) -> list[tuple[Any, asyncio.Future]]:
        batch = []
        while self._waiting and len(batch) < self._max:
            operation, future = self._waiting.popleft()
            if not future.done():  # its caller gave up (cancelled)
                batch.append((operation, future))
        return batch

    async def _dispatch(self) -> None:
        assert self._wake is not None and self._slots is not None
        while True:
            await self._wake.wait()
            if self._limiter is not None:
                await self._limiter.acquire()
            await self._slots.acquire()
            batch = self._take()
            if not self._waiting:
                self._wake.clear()
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._send_batch(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_batch(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        assert self._slots is not None
        self.requests += 1
        self.operations += len(batch)
        try:
            if len(batch) == 1:
                answers = [await self._send(batch[0][0])]
            else:
                log.debug("businessnxt: %d operations in one request", len(batch))
                body = await self._send([operation for operation, _ in batch])
                answers = _answers(body, len(batch))
        except Exception as exc:
            for i, (_, future) in enumerate(batch):
                if not future.done():
                    # each caller raises its own copy (one exception object raised in many tasks
                    # would collect all their tracebacks)
                    future.set_exception(exc if i == 0 else copy.copy(exc))
        except BaseException:  # cancelled (the client closes)
            for _, future in batch:
                future.cancel()
            raise
        else:
            for (_, future), answer in zip(batch, answers):
                if not future.done():
                    future.set_result(answer)
        finally:
            self._slots.release()


def _answers(body: Any, count: int) -> list[Any]:
    """Each member's answer from a batch's answer. An error object instead of the list (e.g.
    the company's in-flight limit) is every member's answer."""
    if isinstance(body, dict):
        return [body] * count
    if not isinstance(body, list) or len(body) != count:
        raise MalformedResponseError(f"a batch of {count} operations was not answered with {count} answers")
    return body
