"""Compatibility fixes between aiokafka and the embedded broker (Tansu).

Tansu numbers a consumer group's first generation 0, but aiokafka only sends
LeaveGroup when ``generation > 0``. A worker stopped cleanly in its first
generation therefore stayed in the group as a ghost until its session timed
out, and the next worker's join waited for it (measured: ready in 19.5 s
instead of 6.5 s). ``apply()`` makes aiokafka leave whenever it holds a valid
generation (``>= 0``; -1 means "none"), which is what the Kafka protocol says.
Idempotent; harmless on Apache Kafka, whose generations start at 1.

Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Apache
Kafka answers a waiting fetch as soon as data arrives, but Tansu waits the
whole time, so every hop of the topology (change -> flow -> command -> result)
cost about 0.6 s (measured: a produce -> consume round trip takes p50 0.615 s
at 1500 ms, 0.115 s at 500 ms, 0.017 s at 100 ms, 0.005 s at 20 ms).
``set_fetch_max_wait()`` makes Faust's consumers use the configured wait.

aiokafka keeps one open batch per partition: when it is full, ``send()`` waits
until the sender has taken it into a request. With the single-record batches
the embedded broker needs, every second message to a partition therefore
waited a broker round trip, and Faust's producer buffer (table changelogs)
sends one message at a time, so one busy partition held up all the others
("producer buffer full"). ``apply()`` lets up to ``QUEUED_BATCHES_PER_PARTITION``
full batches queue per partition (the accumulator already keeps a queue; the
sender still takes them in order, one per partition per request); beyond that,
``send()`` waits as before.
"""
from __future__ import annotations

import logging
import time

import copy

from aiokafka.consumer import group_coordinator as gc
from aiokafka.errors import KafkaTimeoutError, ProducerClosed
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)

_applied = False

#: Full batches that may wait per partition before ``send()`` applies backpressure.
QUEUED_BATCHES_PER_PARTITION = 256


async def _maybe_leave_group(self) -> None:
    if self.generation >= 0 and self._group_instance_id is None and self.member_id:
        request = LeaveGroupRequest(self.group_id, self.member_id)
        try:
            await self._send_req(request)
        except gc.Errors.KafkaError as err:
            log.error("LeaveGroup request failed: %s", err)
        else:
            log.info("LeaveGroup request succeeded")
    self.reset_generation()


_fetch_max_wait_ms: int | None = None


def set_fetch_max_wait(ms: int) -> None:
    """Faust's worker consumer waits at most ``ms`` for data in a fetch (instead of 1,500 ms)."""
    global _fetch_max_wait_ms
    from faust.transport.drivers import aiokafka as faust_aiokafka

    cls = faust_aiokafka.AIOKafkaConsumerThread
    if _fetch_max_wait_ms is None:
        original = cls._create_worker_consumer

        def _create_worker_consumer(self, transport):
            consumer = original(self, transport)
            consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # read when the consumer starts its fetcher
            return consumer

        cls._create_worker_consumer = _create_worker_consumer
    _fetch_max_wait_ms = ms


async def _add_message(self, tp, key, value, timeout, timestamp_ms=None, headers=[]):  # noqa: B006 - aiokafka's
    """``MessageAccumulator.add_message`` that queues a new batch instead of waiting for a full one to drain."""
    while True:
        if self._closed:
            raise ProducerClosed()
        if self._exception is not None:
            raise copy.copy(self._exception)
        fresh = not self._batches.get(tp)
        batch = self._append_batch(self.create_builder(), tp) if fresh else self._batches[tp][-1]
        future = batch.append(key, value, timestamp_ms, headers=headers)
        if future is not None:
            return future
        if not fresh and len(self._batches[tp]) < QUEUED_BATCHES_PER_PARTITION:
            batch = self._append_batch(self.create_builder(), tp)
            future = batch.append(key, value, timestamp_ms, headers=headers)
            if future is not None:
                return future
        if not self._waiter_future.done():
            self._waiter_future.set_result(None)
        start = time.monotonic()
        await batch.wait_drain(timeout)
        timeout -= time.monotonic() - start
        if timeout <= 0:
            raise KafkaTimeoutError()


def apply() -> None:
    global _applied
    if _applied:
        return
    gc.GroupCoordinator._maybe_leave_group = _maybe_leave_group
    MessageAccumulator.add_message = _add_message
    _applied = True
