"""Workarounds for the embedded broker's (Tansu 0.6) defects, installed by ``apply()`` only
in a worker whose start-up self-check found the defect (``streams.broker_check``,
``streams.app``). None of them runs on Apache Kafka: its self-checks find none of these
defects.

**A first generation numbered 0** (``leave-group-generation-0``). Tansu numbers a
consumer group's first generation 0, but aiokafka only sends LeaveGroup when
``generation > 0``. A worker stopped cleanly in its first generation therefore
stayed in the group as a ghost until its session timed out, and the next worker's
join waited for it (measured: ready in 19.5 s instead of 6.5 s). The patch makes
aiokafka leave whenever it holds a valid generation (``>= 0``; -1 means "none"),
which is what the Kafka protocol says. Self-check: a throw-away group's first
generation (``kafka.first_generation``). It can go once aiokafka leaves at
generation 0 (or Tansu starts at 1).

**An idle fetch waits its whole ``fetch_max_wait_ms``** (``fetch-max-wait``).
Faust hard-codes ``fetch_max_wait_ms=1500`` for its worker consumer. Apache Kafka
answers a waiting fetch as soon as data arrives, but Tansu waits the whole time, so
every hop of the topology (change -> flow -> command -> result) cost about 0.6 s
(measured: a produce -> consume round trip takes p50 0.615 s at 1500 ms, 0.115 s at
500 ms, 0.017 s at 100 ms, 0.005 s at 20 ms). The patch makes Faust's worker
consumer wait ``TALKSTREAM_FETCH_MAX_WAIT_MS`` instead. Self-check:
``kafka.idle_fetch_waits_out``. It can go once Faust takes the wait from its
settings, or Tansu answers a waiting fetch when data arrives.

**Wrong end offsets for multi-record batches** (``single-record-batches``). Tansu
reports a partition's end offset as the base offset of its last batch + 1, so Faust's
table recovery would stop short of the last updates; the producers then send one
record per batch to the topics read to their end (``kafka.one_record_per_batch``:
changelogs, compacted topics) and normal batches elsewhere (measured on the
embedded broker: a bare produce -> consume loop moves 4,100 messages/s with one
record per batch, 38,900 with batches). aiokafka keeps one open batch per partition:
when it is full, ``send()`` waits until the sender has taken it into a request, so
every second single-record message to a partition waited a broker round trip, and
one busy partition held up Faust's producer buffer for all the others. The patch
lets up to ``QUEUED_BATCHES_PER_PARTITION`` full single-record batches queue per
partition (normal batches: ``QUEUED_FULL_BATCHES``); and, where the broker takes
several batches of one partition in one produce request (Tansu does;
``kafka.several_batches_per_request``), the sender takes up to that many waiting
single-record batches of a partition together (``_Batches``): still one record per
batch, in order, each answered with its own offset. Self-check:
``kafka.end_offsets_are_exact``. It can go once Tansu's end offsets are exact.
"""
from __future__ import annotations

import copy
import logging
import time

from connectors.common.kafka import BATCH_SIZE, SINGLE_RECORD_BATCH_SIZE, one_record_per_batch
from connectors.common.patches import Patch, install

log = logging.getLogger(__name__)

#: Full single-record batches that may wait per partition before ``send()`` applies backpressure.
QUEUED_BATCHES_PER_PARTITION = 256
#: The same for normal (multi-record) batches: 256 of those could hold tens of megabytes (a
#: flow-topic batch message is ~50 KB), and a few already keep the sender busy.
QUEUED_FULL_BATCHES = 4


# --------------------------------------------------------------------------- leave-group-generation-0

async def _maybe_leave_group(self) -> None:
    """aiokafka's ``GroupCoordinator._maybe_leave_group``, leaving at generation 0 too."""
    from aiokafka.consumer import group_coordinator as gc
    from aiokafka.protocol.group import LeaveGroupRequest

    if self.generation >= 0 and self._group_instance_id is None and self.member_id:
        request = LeaveGroupRequest(self.group_id, self.member_id)
        try:
            await self._send_req(request)
        except gc.Errors.KafkaError as err:
            log.error("LeaveGroup request failed: %s", err)
        else:
            log.info("LeaveGroup request succeeded")
    self.reset_generation()


def _install_leave_group() -> None:
    from aiokafka.consumer import group_coordinator as gc

    gc.GroupCoordinator._maybe_leave_group = _maybe_leave_group


# --------------------------------------------------------------------------- fetch-max-wait

_fetch_max_wait_ms = 1500


def _install_fetch_max_wait() -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    cls = faust_aiokafka.AIOKafkaConsumerThread
    original = cls._create_worker_consumer

    def _create_worker_consumer(self, transport):
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _fetch_max_wait_ms  # read when the consumer starts its fetcher
        return consumer

    cls._create_worker_consumer = _create_worker_consumer


# --------------------------------------------------------------------------- single-record-batches

def single_record_batches(accumulator, tp) -> bool:
    """Does ``tp`` get one record per batch: the protection is on and the topic needs exact end offsets."""
    return accumulator._batch_size <= SINGLE_RECORD_BATCH_SIZE and one_record_per_batch(tp.topic)


def create_builder(accumulator, tp):
    """A batch builder for ``tp``: one record per batch only where exact end offsets are needed."""
    if accumulator._batch_size <= SINGLE_RECORD_BATCH_SIZE and not single_record_batches(accumulator, tp):
        configured = accumulator._batch_size
        accumulator._batch_size = BATCH_SIZE
        try:
            return accumulator.create_builder()
        finally:
            accumulator._batch_size = configured
    return accumulator.create_builder()


def queue_depth(accumulator, tp) -> int:
    """How many full batches may wait for ``tp``: many single-record ones, few normal ones."""
    return QUEUED_BATCHES_PER_PARTITION if single_record_batches(accumulator, tp) else QUEUED_FULL_BATCHES


async def add_message(self, tp, key, value, timeout, timestamp_ms=None, headers=[]):  # noqa: B006 - aiokafka's
    """``MessageAccumulator.add_message`` that queues a new batch instead of waiting for a full one to drain."""
    from aiokafka.errors import KafkaTimeoutError, ProducerClosed

    while True:
        if self._closed:
            raise ProducerClosed()
        if self._exception is not None:
            raise copy.copy(self._exception)
        fresh = not self._batches.get(tp)
        batch = self._append_batch(create_builder(self, tp), tp) if fresh else self._batches[tp][-1]
        future = batch.append(key, value, timestamp_ms, headers=headers)
        if future is not None:
            return future
        if not fresh and len(self._batches[tp]) < queue_depth(self, tp):
            batch = self._append_batch(create_builder(self, tp), tp)
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


#: Single-record batches of one partition one produce request may carry (1: aiokafka's one).
_batches_per_request = 1


class _Batches:
    """Full single-record batches of one partition that go in one produce request. To the
    sender they are one batch: one data buffer, and the broker answers with the first one's
    offset; each batch is resolved with its own."""

    def __init__(self, batches: list) -> None:
        self.batches = batches

    @property
    def tp(self):
        return self.batches[0].tp

    @property
    def retry_count(self) -> int:
        return self.batches[0].retry_count

    def get_data_buffer(self) -> bytes:
        return b"".join(bytes(batch.get_data_buffer()) for batch in self.batches)

    def expired(self) -> bool:
        return self.batches[0].expired()

    def done(self, base_offset, timestamp=None, log_start_offset=None) -> None:
        offset = base_offset
        for batch in self.batches:
            batch.done(offset, timestamp, log_start_offset)
            if offset is not None and offset >= 0:
                offset += batch.record_count

    def done_noack(self) -> None:
        for batch in self.batches:
            batch.done_noack()

    def failure(self, exception) -> None:
        for batch in self.batches:
            batch.failure(exception=copy.copy(exception))


def _drain_by_nodes(original):
    def drain_by_nodes(self, ignore_nodes, muted_partitions=frozenset()):
        """aiokafka's drain, then up to ``_batches_per_request`` waiting single-record batches of
        a partition in the request instead of one."""
        nodes, unknown_leaders = original(self, ignore_nodes, muted_partitions)
        if _batches_per_request > 1 and self._txn_manager is None:
            for batches in nodes.values():
                for tp, first in list(batches.items()):
                    if not single_record_batches(self, tp):
                        continue
                    more = []
                    while len(more) + 1 < _batches_per_request:
                        queue = self._batches.get(tp)
                        if not queue or queue[0].is_empty() or queue[0].remaining_linger():
                            break
                        more.append(self._pop_batch(tp))
                    if more:
                        batches[tp] = _Batches([first, *more])
        return nodes, unknown_leaders
    return drain_by_nodes


def _reenqueue(original):
    def reenqueue(self, batch):
        """A request's batches go back to the front of their queue, in order, when it is retried."""
        if isinstance(batch, _Batches):
            for one in reversed(batch.batches):
                original(self, one)
        else:
            original(self, batch)
    return reenqueue


def _install_single_record_batches() -> None:
    from aiokafka.producer.message_accumulator import MessageAccumulator

    MessageAccumulator.add_message = add_message
    MessageAccumulator.drain_by_nodes = _drain_by_nodes(MessageAccumulator.drain_by_nodes)
    MessageAccumulator.reenqueue = _reenqueue(MessageAccumulator.reenqueue)


_ACCUMULATOR = "aiokafka.producer.message_accumulator"

LEAVE_GROUP = Patch("leave-group-generation-0", "embedded broker", (
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_maybe_leave_group"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "reset_generation"),
), _install_leave_group)
FETCH_MAX_WAIT = Patch("fetch-max-wait", "embedded broker", (
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_create_worker_consumer"),
), _install_fetch_max_wait)
SINGLE_RECORD_BATCHES = Patch("single-record-batches", "embedded broker", (
    (_ACCUMULATOR, "MessageAccumulator", "add_message"),
    (_ACCUMULATOR, "MessageAccumulator", "drain_by_nodes"),
    (_ACCUMULATOR, "MessageAccumulator", "reenqueue"),
    (_ACCUMULATOR, "MessageAccumulator", "create_builder"),
), _install_single_record_batches)

PATCHES = (LEAVE_GROUP, FETCH_MAX_WAIT, SINGLE_RECORD_BATCHES)


def set_batches_per_request(count: int) -> None:
    """Let a produce request carry up to ``count`` single-record batches of one partition
    (only for a broker seen to take them: ``streams.broker_check.batches_per_request``)."""
    global _batches_per_request
    _batches_per_request = max(1, count)


def apply(*, single_record_batches: bool, batches_per_request: int | None = None, fetch_max_wait_ms: int | None = None,
          leave_at_generation_zero: bool = False) -> None:
    """Install the workarounds for the defects the start-up self-checks found: ``single_record_batches``
    (wrong end offsets; ``batches_per_request`` > 1 where the broker takes several batches of a partition
    in one request), ``fetch_max_wait_ms`` (an idle fetch waits it out: Faust's worker consumer waits this
    long instead of 1,500 ms) and ``leave_at_generation_zero`` (a group's first generation is 0)."""
    global _fetch_max_wait_ms
    if single_record_batches:
        install(SINGLE_RECORD_BATCHES)
        if batches_per_request is not None:  # None: as set before
            set_batches_per_request(batches_per_request)
    if fetch_max_wait_ms is not None:
        _fetch_max_wait_ms = fetch_max_wait_ms
        install(FETCH_MAX_WAIT)
    if leave_at_generation_zero:
        install(LEAVE_GROUP)
