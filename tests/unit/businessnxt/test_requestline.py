"""The request line on its own: which operations leave together, and who gets which answer.

``send`` here is a plain function that records what it was given and answers like
Business NXT (a list for a batch); the HTTP side is in
``tests/integration/businessnxt/test_client.py``.
"""
from __future__ import annotations

import asyncio

import pytest
from aiolimiter import AsyncLimiter

from connectors.businessnxt.requestline import MAX_OPERATIONS, RequestLine
from connectors.common.errors import MalformedResponseError, ServerError


class Server:
    """Answers each operation ``{"n": i}`` with ``{"data": i * 10}``; holds requests while ``gate`` is clear."""

    def __init__(self) -> None:
        self.requests: list = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail: Exception | None = None
        self.answer = None  # a fixed answer instead

    async def send(self, payload):
        self.requests.append(payload)
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            return self.answer
        if isinstance(payload, list):
            return [{"data": op["n"] * 10} for op in payload]
        return {"data": payload["n"] * 10}


async def _first_request_holds_the_only_slot(server: Server, line: RequestLine) -> asyncio.Task:
    """Sends ``{"n": 0}`` and waits until the server holds it (its gate closed): what is
    submitted next waits for the slot."""
    server.gate.clear()
    first = asyncio.create_task(line.submit({"n": 0}))
    while not server.requests:
        await asyncio.sleep(0)
    return first


async def test_a_lone_operation_leaves_at_once_as_a_plain_request():
    server = Server()
    line = RequestLine(server.send, slots=4)
    assert await line.submit({"n": 1}) == {"data": 10}
    assert await line.submit({"n": 2}) == {"data": 20}
    assert server.requests == [{"n": 1}, {"n": 2}]
    await line.aclose()


async def test_operations_waiting_for_a_slot_leave_together_each_with_its_own_answer():
    server = Server()
    line = RequestLine(server.send, slots=1)
    first = await _first_request_holds_the_only_slot(server, line)
    rest = [asyncio.create_task(line.submit({"n": i})) for i in range(1, 6)]
    await asyncio.sleep(0)
    server.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert answers == [{"data": i * 10} for i in range(6)]
    assert server.requests == [{"n": 0}, [{"n": i} for i in range(1, 6)]]
    assert (line.requests, line.operations) == (2, 6)
    await line.aclose()


async def test_operations_queued_behind_the_rate_limiter_share_a_request():
    server = Server()
    line = RequestLine(server.send, slots=8, limiter=AsyncLimiter(1, 0.5))  # one request per 0.5 s
    await line.submit({"n": 0})  # takes the token

    async def caller(i: int) -> list:
        return [await line.submit({"n": i * 100 + j}) for j in range(3)]  # each waits for its answer

    results = await asyncio.gather(*(caller(i) for i in range(4)))
    assert results == [[{"data": (i * 100 + j) * 10} for j in range(3)] for i in range(4)]
    # 12 operations of 4 callers: each wait for the limiter lets one request carry all four callers'
    assert len(server.requests) == 1 + 3
    assert all(len(r) == 4 for r in server.requests[1:])
    await line.aclose()


async def test_a_request_carries_at_most_32_operations():
    server = Server()
    line = RequestLine(server.send, slots=1)
    answers = await asyncio.gather(*(line.submit({"n": i}) for i in range(70)))
    assert answers == [{"data": i * 10} for i in range(70)]
    assert [len(r) for r in server.requests] == [MAX_OPERATIONS, MAX_OPERATIONS, 70 - 2 * MAX_OPERATIONS]
    await line.aclose()


async def test_a_failed_request_fails_every_member_with_its_own_error():
    server = Server()
    server.fail = ServerError("server error", status=500)
    line = RequestLine(server.send, slots=1)
    results = await asyncio.gather(*(line.submit({"n": i}) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, ServerError) and r.status == 500 for r in results)
    assert len({id(r) for r in results}) == 3  # not one object raised in three tasks
    assert len(server.requests) == 1
    await line.aclose()


async def test_an_error_object_for_a_batch_is_every_members_answer():
    server = Server()
    server.answer = {"errors": [{"message": "Company 1 has 60 requests in progress. Limit is 60."}], "data": None}
    line = RequestLine(server.send, slots=1)
    results = await asyncio.gather(*(line.submit({"n": i}) for i in range(3)))
    assert results == [server.answer] * 3


async def test_a_batch_answered_with_the_wrong_number_of_answers_is_a_malformed_response():
    server = Server()
    server.answer = [{"data": 1}]
    line = RequestLine(server.send, slots=1)
    results = await asyncio.gather(*(line.submit({"n": i}) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, MalformedResponseError) for r in results)
    await line.aclose()


async def test_a_cancelled_callers_operation_is_not_sent():
    server = Server()
    line = RequestLine(server.send, slots=1)
    first = await _first_request_holds_the_only_slot(server, line)
    gone = asyncio.create_task(line.submit({"n": 1}))
    kept = asyncio.create_task(line.submit({"n": 2}))
    await asyncio.sleep(0)
    gone.cancel()
    server.gate.set()
    assert await first == {"data": 0}
    assert await kept == {"data": 20}
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert server.requests == [{"n": 0}, {"n": 2}]
    await line.aclose()
