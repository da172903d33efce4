"""Fixes to aiokafka and Faust: for the embedded broker (Tansu), and for rebalances.

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
full single-record batches queue per partition (the accumulator already keeps a
queue; the sender still takes them in order, one per partition per request);
beyond that, ``send()`` waits as before. Normal batches (16 KB, or one larger
record such as a flow-topic batch message) queue at most
``QUEUED_FULL_BATCHES`` deep: 256 of those per partition could hold tens of
megabytes (a flow-topic batch message is ~50 KB), and a few already keep the
sender busy.

With the single-record-batch protection on (the producer's batch limit is
one record), the accumulator gives that limit only to the topics that need
exact end offsets (``kafka.one_record_per_batch``: table changelogs and
compacted topics read to their end); every other topic gets normal batches
(measured on the embedded broker: a bare produce -> consume loop moves 4,100
messages/s with one record per batch, 38,900 with batches).

aiokafka sends a broker the next produce request as soon as the previous one
is answered, so under load each request carried few messages (measured: about
10,000 requests for an initial load of 21,000 records, 80,000 messages).
``set_produce_request_gap()`` keeps a broker's request slot for a moment after
each answer (default 2 ms, ``TALKSTREAM_PRODUCE_REQUEST_GAP_MS``): the messages
that come meanwhile leave together in the next request (measured: about 3,500
requests for the same load, and a seventh less broker CPU per record). A
message sent while the producer is idle leaves at once; under load it waits at
most the gap more. The answer to a request is handled (its sends complete)
before the gap.

Two of Faust's per-message costs were turns of the event loop. Every message
Faust publishes (``topic.send``, every table changelog message) asked
``app.maybe_start_producer()`` for the producer, a ``mode`` stampede wrapper
that yields to the loop three times per call; an agent's send then waited
while other tasks ran (measured: 0.25 ms per product-reference send during a
load). And every consumed message was handed to the streams with
``wait_first(deliver(message), suspend_flow.wait())``: four tasks per message.
``apply()`` returns the started producer at once (``_patch_get_producer``), and
starts each delivery in the consumer's own task while the flow is not
suspended: one that need not wait (nearly all) costs no task; one that waits
goes on as before beside the suspension (``_patch_delivery_wait``). Measured
together: a load-only initial load from 940-990 to 1,180-1,260 records/s on
the 2-core machine, the worker's CPU per record from about 0.95 to 0.75 ms.

Faust could lose records when partitions moved between live workers (on any
broker): see "seek-safe consuming" below. ``apply()`` installs that fix too.

aiokafka also keeps one produce request in flight per broker, with one batch
per partition, so a busy changelog partition got one record per broker round
trip. Where the broker takes several batches of one partition in one request
(Tansu does; checked at start-up, ``set_batches_per_request()``), the sender
takes up to that many waiting single-record batches of a partition together
(``_Batches``): still one record per batch, in order, each answered with its
own offset.

Faust's producer buffer (table changelog messages) stops the streams, with a
warning, once it holds over 100 messages; a flow-topic batch message writes up
to 100 links, and the provisional link states written at a commit are
thousands during a load (``streams.topology.write_unwritten``), so ``apply()``
lets it hold ``PRODUCER_BUFFER_MESSAGES``. The messages hold the values the
table holds anyway (no copies).

Faust's tables write each change to the changelog partition of the event being
processed, which its stream iteration sets one event at a time. The route agent
reads change events in batches (``take_events``) that span partitions, so it
names each event before the table write (``set_current_event()``).
"""
from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import time
import weakref

from aiokafka import partitioner
from aiokafka.consumer import group_coordinator as gc
from aiokafka.errors import KafkaTimeoutError, ProducerClosed
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.protocol.group import LeaveGroupRequest
from aiokafka.structs import TopicPartition

from connectors.common.kafka import BATCH_SIZE, SINGLE_RECORD_BATCH_SIZE, one_record_per_batch
from connectors.common.murmur2 import murmur2

log = logging.getLogger(__name__)

#: aiokafka's own murmur2, which ``apply()`` replaces (the tests compare the two).
AIOKAFKA_MURMUR2 = partitioner.murmur2

_applied = False

#: Full single-record batches that may wait per partition before ``send()`` applies backpressure.
QUEUED_BATCHES_PER_PARTITION = 256
#: The same for normal (multi-record) batches.
QUEUED_FULL_BATCHES = 4
#: Table changelog messages Faust's producer buffer holds before it stops the streams and
#: logs "producer buffer full" (Faust: 100). One flow-topic batch writes up to 100 links; a
#: commit during a load writes a few thousand provisional link states at once.
PRODUCER_BUFFER_MESSAGES = 10000


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


_produce_request_gap = 0.0
_produce_gap_installed = False
#: Produce requests this process sent (counted once ``set_produce_request_gap`` was called; the
#: worker's ``talkstream_produce_requests_total``).
produce_requests = 0


def set_produce_request_gap(ms: float) -> None:
    """After a broker answered a produce request, the producer waits ``ms`` before it sends
    that broker the next one (every aiokafka producer in the process; 0: no wait)."""
    global _produce_request_gap, _produce_gap_installed
    from aiokafka.producer.sender import SendProduceReqHandler

    if not _produce_gap_installed:
        original = SendProduceReqHandler.do

        async def do(self, node_id):
            global produce_requests
            produce_requests += 1
            # the sender marks the broker free once this returns: the messages sent meanwhile
            # wait in the accumulator and leave together in the next request
            result = await original(self, node_id)
            if _produce_request_gap:
                await asyncio.sleep(_produce_request_gap)
            return result

        SendProduceReqHandler.do = do
        _produce_gap_installed = True
    _produce_request_gap = ms / 1000


def set_current_event(event) -> None:
    """Make ``event`` the one Faust's tables write their changelog for (its partition), in the
    calling task only. A ``take_events`` batch spans partitions, and Faust sets the current
    event in its own draining task; ``Stream._set_current_event`` would also change the
    stream's attribute that draining task reads, so only the context variable is set."""
    from faust import streams as faust_streams

    faust_streams._current_event.set(weakref.ref(event))


def _single_record_batches(accumulator, tp) -> bool:
    """Does ``tp`` get one record per batch: the protection is on and the topic needs exact end offsets."""
    return accumulator._batch_size <= SINGLE_RECORD_BATCH_SIZE and one_record_per_batch(tp.topic)


def _create_builder(accumulator, tp):
    """A batch builder for ``tp``: one record per batch only where exact end offsets are needed."""
    if accumulator._batch_size <= SINGLE_RECORD_BATCH_SIZE and not _single_record_batches(accumulator, tp):
        configured = accumulator._batch_size
        accumulator._batch_size = BATCH_SIZE
        try:
            return accumulator.create_builder()
        finally:
            accumulator._batch_size = configured
    return accumulator.create_builder()


def _queue_depth(accumulator, tp) -> int:
    """How many full batches may wait for ``tp``: many single-record ones, few normal ones."""
    return QUEUED_BATCHES_PER_PARTITION if _single_record_batches(accumulator, tp) else QUEUED_FULL_BATCHES


#: Single-record batches of one partition one produce request may carry (1: aiokafka's one).
_batches_per_request = 1


def set_batches_per_request(count: int) -> None:
    """Let a produce request carry up to ``count`` single-record batches of one partition
    (only for a broker seen to take them: ``streams.broker_check.batches_per_request``)."""
    global _batches_per_request
    _batches_per_request = max(1, count)


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
                    if not _single_record_batches(self, tp):
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


async def _add_message(self, tp, key, value, timeout, timestamp_ms=None, headers=[]):  # noqa: B006 - aiokafka's
    """``MessageAccumulator.add_message`` that queues a new batch instead of waiting for a full one to drain."""
    while True:
        if self._closed:
            raise ProducerClosed()
        if self._exception is not None:
            raise copy.copy(self._exception)
        fresh = not self._batches.get(tp)
        batch = self._append_batch(_create_builder(self, tp), tp) if fresh else self._batches[tp][-1]
        future = batch.append(key, value, timestamp_ms, headers=headers)
        if future is not None:
            return future
        if not fresh and len(self._batches[tp]) < _queue_depth(self, tp):
            batch = self._append_batch(_create_builder(self, tp), tp)
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


# --------------------------------------------------------------------------- seek-safe consuming
#
# Faust's drain loop remembers the last offset it read per partition, drops
# anything below it, and treats any jump above it as a gap that needs no
# processing (meant for compacted topics). At a rebalance that lost records
# (measured: a worker joining a running one during a 21,000-record load lost
# records in 3 of 5 runs, up to 1,840 consecutive offsets of a partition).
# Faust fetches in another thread and could yield records aiokafka had
# returned before the rebalance or before a seek, and its recovery resumed the
# stream partitions before seeking them to the committed offsets. A record ahead of the committed offset then
# came first, the offsets between became a "gap", and their re-fetch was
# dropped as already read.
#
# The fix: each batch is stamped, in the consumer thread as aiokafka returns
# it, with aiokafka's assignment and a seek counter; a record is not yielded
# once the assignment changed (aiokafka fetches every partition again from its
# committed offset) or its partition was sought since (the seek is the new
# position). Recovery seeks before it resumes the stream partitions. And as a
# last guard, on the topics the streams consume (never compacted, no
# transactions: their offsets are contiguous) a record that skips offsets is
# not handed over: the partition is read again from the first missing offset,
# once (a second time the jump is accepted and logged); between batches, so is
# a partition whose aiokafka position is past records never handed over (at a
# partition's end no later record would show the jump). The guard does fire:
# after restarts (a few offsets) and when a worker joins (1,204 offsets seen).
#
# One path was pinned down later: Faust's "seek back to the committed offsets"
# (after a rebalance, and whenever records came while its flow was stopped)
# calls aiokafka's ``seek_to_committed``, which does nothing for a partition
# with no commit (or a commit at 0). Records aiokafka had returned there and
# Faust then left while its flow was stopped were skipped: the partition went
# on from where the fetcher had got to (measured with two workers starting
# together: the first flow event handed over was offset 95, 1 run in 3; the
# links of offsets 0-94 were never made, and the guard did not see it because
# no record of the partition had been handed over yet). Such partitions are now
# sought to their first offset, and the between-batches check also covers a
# partition sought with nothing handed over since.


_seeks = itertools.count(1)
_sought_at: dict[tuple[str, int], int] = {}  # (topic, partition) -> number of its latest seek
_sought_to: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset of its latest seek


class Fetched(dict):
    """Records as aiokafka returned them, with its assignment and the seek count at that moment."""

    def __init__(self, records, assignment, seek: int) -> None:
        super().__init__(records)
        self.assignment = assignment
        self.seek = seek

    def stale(self, topic: str, partition: int, assignment) -> str | None:
        """Why a record of this batch must not be yielded now (``None``: it may)."""
        if assignment is not self.assignment:
            return "rebalanced"
        if _sought_at.get((topic, partition), 0) > self.seek:
            return "sought"
        return None


class Continuity:
    """The offset each partition's next record must have, on topics whose offsets are contiguous."""

    def __init__(self) -> None:
        self.assignment = None
        self.expected: dict[tuple[str, int], int] = {}
        self.seeks_seen: dict[tuple[str, int], int] = {}
        self.retried: dict[tuple[str, int], int] = {}

    def _adopt(self, assignment) -> None:
        if assignment is not self.assignment:  # a rebalance: positions start over from the seeks
            self.assignment = assignment
            self.expected.clear()

    def _due(self, key: tuple[str, int]) -> int | None:
        """The offset the partition's next record must have: where it was sought, if it was sought
        since its last record handed over; else the offset after that record (``None``: unknown)."""
        if _sought_at.get(key, 0) > self.seeks_seen.get(key, 0):
            return _sought_to[key]
        return self.expected.get(key)

    def check(self, assignment, key: tuple[str, int], offset: int) -> int | None:
        """``None``: hand the record over. An offset: records before this one are missing; read the
        partition again from there (asked once per missing offset; the second time it is accepted)."""
        self._adopt(assignment)
        expected = self._due(key)
        if expected is not None:  # takes a seek since the last record into account (else a no-op)
            self.expected[key] = expected
            self.seeks_seen[key] = _sought_at.get(key, 0)
        if expected is not None and offset > expected:
            if self.retried.get(key) != expected:
                self.retried[key] = expected
                return expected
            log.warning("%s[%s]: offsets %s to %s are not on the broker; going on from %s",
                        key[0], key[1], expected, offset - 1, offset)
        if expected is None or offset >= expected:
            self.expected[key] = offset + 1
        return None

    def dropped(self, assignment, position, contiguous) -> list[tuple[tuple[str, int], int]]:
        """Between two batches: partitions aiokafka has moved past records that were never handed
        over (no later record would show the jump), with the offset to read them again from.
        ``position(key)`` is aiokafka's next offset to return for the partition, or ``None`` (not
        assigned here); ``contiguous(topic)``: is it one of the streams' own topics. A partition
        sought since its last record handed over (or with none handed over yet) is due at the
        offset it was sought to."""
        self._adopt(assignment)
        missing = []
        for key in set(self.expected) | {key for key in _sought_to if contiguous(key[0])}:
            expected = self._due(key)
            if expected is None:
                continue
            now = position(key)
            if now is not None and now > expected and self.retried.get(key) != expected:
                self.retried[key] = expected
                missing.append((key, expected))
        return missing


def _worker_assignment(consumer):
    """The aiokafka assignment under Faust's worker consumer."""
    return _assignment(consumer._thread._ensure_consumer())


def _position(consumer, key: tuple[str, int]) -> int | None:
    """aiokafka's next offset to return for a partition (read from the main thread; a plain attribute)."""
    assignment = _worker_assignment(consumer)
    state = assignment.state_value(TopicPartition(*key)) if assignment is not None else None
    return state.position if state is not None and state.has_valid_position else None


def _assignment(aiokafka_consumer):
    subscription = aiokafka_consumer._subscription.subscription
    return subscription.assignment if subscription is not None else None


def _patch_seek_to(Fetcher) -> None:
    original = Fetcher.seek_to

    def seek_to(self, tp, offset):
        """aiokafka's ``Fetcher.seek_to``, remembering that ``tp`` was repositioned."""
        _sought_to[(tp.topic, tp.partition)] = offset
        _sought_at[(tp.topic, tp.partition)] = next(_seeks)
        return original(self, tp, offset)

    Fetcher.seek_to = seek_to


def _patch_fetch_records(ConsumerThread) -> None:
    original = ConsumerThread._fetch_records

    async def _fetch_records(self, consumer, active_partitions, timeout=None, max_records=None):
        """Faust's fetch (in the consumer thread), stamped as aiokafka returns the records."""
        records = await original(self, consumer, active_partitions, timeout=timeout, max_records=max_records)
        return Fetched(records, _assignment(consumer), next(_seeks))

    ConsumerThread._fetch_records = _fetch_records


def _patch_getmany(Consumer, current_assignment, position) -> None:
    """Faust's ``Consumer.getmany`` without the records that became stale while it yielded the batch."""
    from faust.types.tuples import TP

    original, original_wait = Consumer.getmany, Consumer._wait_next_records

    async def _wait_next_records(self, timeout):
        records, active_partitions = await original_wait(self, timeout)
        self._talkstream_batch = records
        return records, active_partitions

    async def getmany(self, timeout: float):
        self._talkstream_batch = None
        continuity = self.__dict__.setdefault("_talkstream_continuity", Continuity())
        # not while the flow is stopped (a rebalance): then records are left on purpose and read again anyway
        missing = continuity.dropped(current_assignment(self), lambda key: position(self, key),
                                     self.app.topics.acks_enabled_for) if self.flow_active else []
        for (topic, partition), back in missing:
            log.warning("%s[%s]: records from %s on were never handed over; reading the partition again from %s",
                        topic, partition, back, back)
            await self.seek(TP(topic, partition), back)
        batch = original(self, timeout)
        try:
            async for tp, message in batch:
                fetched = self._talkstream_batch
                assignment = current_assignment(self)
                why = fetched.stale(tp.topic, tp.partition, assignment) if isinstance(fetched, Fetched) else None
                if why == "rebalanced":
                    log.info("records fetched before the rebalance were dropped; they are read again")
                    break
                if why is not None:
                    continue
                if self.app.topics.acks_enabled_for(tp.topic):
                    back = continuity.check(assignment, (tp.topic, tp.partition), message.offset)
                    if back is not None:
                        log.warning("%s[%s]: offset %s came where %s was due (records skipped at a rebalance or "
                                    "seek); reading the partition again from %s", tp.topic, tp.partition,
                                    message.offset, back, back)
                        await self.seek(tp, back)
                        continue
                yield tp, message
        finally:
            await batch.aclose()

    Consumer._wait_next_records = _wait_next_records
    Consumer.getmany = getmany


def _patch_seek_to_committed(ConsumerThread) -> None:
    async def seek_to_committed(self):
        """Faust's seek to the committed offsets, which also seeks the partitions with no commit
        (aiokafka's ``seek_to_committed`` leaves them wherever its fetcher got to) to their first
        offset: records fetched and then left while the flow was stopped are read again."""
        changelogs = self.app.tables.changelog_topics  # Faust's recovery positions those itself
        return await self.call_thread(_seek_to_committed_or_beginning, self._ensure_consumer(), changelogs)

    ConsumerThread.seek_to_committed = seek_to_committed


async def _seek_to_committed_or_beginning(consumer, skip_topics=frozenset()):
    committed = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items()  # None or 0: aiokafka did not seek
                   if not offset and tp.topic not in skip_topics]
    if uncommitted:
        beginnings = await consumer.beginning_offsets(uncommitted)
        for tp in uncommitted:
            consumer.seek(tp, committed[tp] if committed[tp] is not None else beginnings[tp])
    return committed


def _seek_before_resume(method):
    """Run a recovery step with ``resume_partitions`` held back until ``perform_seek`` has run."""
    async def step(self, *args, **kwargs):
        consumer = self.app.consumer
        held: list = []
        resume, seek = consumer.resume_partitions, consumer.perform_seek

        async def seek_then_resume() -> None:
            await seek()
            while held:
                resume(held.pop(0))

        consumer.resume_partitions, consumer.perform_seek = held.append, seek_then_resume
        try:
            return await method(self, *args, **kwargs)
        finally:
            del consumer.resume_partitions, consumer.perform_seek
            while held:  # no seek happened (another rebalance began): resume as Faust would have
                resume(held.pop(0))

    return step


_before_flush: list = []


def before_producer_flush(callback) -> None:
    """Call ``callback()`` (synchronous; it may send with ``send_soon``) at the start of every
    flush of Faust's producer: before each offset commit, before a rebalance gives partitions
    away, and at stop. What it sends is flushed with the rest."""
    _before_flush.append(callback)


def _patch_producer_flush(Producer) -> None:
    original = Producer.flush

    async def flush(self) -> None:
        for callback in _before_flush:
            callback()
        await original(self)

    Producer.flush = flush


def _patch_get_producer(Topic) -> None:
    """Faust's ``Topic`` asks ``app.maybe_start_producer()`` for the producer before every
    message it publishes. That is a ``mode`` stampede wrapper, which yields to the event loop
    three times per call (``asyncio.sleep(0)`` before and after) even when the producer runs:
    every ``topic.send()`` and every table changelog message was three task switches, and an
    agent sending a product reference was measured waiting 0.25 ms on average while other
    tasks ran. Once the producer has started, it is returned at once."""
    original = Topic._get_producer

    async def _get_producer(self):
        app = self.app
        if not app.in_transaction:
            producer = app.producer
            if producer.started:
                return producer
        return await original(self)

    Topic._get_producer = _get_producer


async def _resume(coro, yielded):
    """Go on with a coroutine that was started by hand (``coro.send(None)`` returned ``yielded``)
    as its task would: wait for the future it yielded (or give the loop one turn for a bare
    yield), send it on, until it returns. Cancelled, it cancels that future and lets the
    coroutine see the cancellation where it waits, as ``asyncio.Task.cancel`` does."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False
                await asyncio.wait((yielded,))
        except asyncio.CancelledError:
            if yielded is not None:
                yielded.cancel()
            try:
                coro.throw(asyncio.CancelledError())
            except StopIteration:
                pass
            else:  # it swallowed the cancellation and went on waiting: stop it
                coro.close()
            raise
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value


def _patch_delivery_wait(Consumer) -> None:
    """Faust's consumer hands each fetched message to its streams with
    ``wait_first(deliver(message), suspend_flow.wait())``: mode makes a task of each, and of
    the consumer's stopped and crashed events, and waits for the first of the four, for every
    message. The delivery only waits while a rebalance holds the streams (flow control), the
    producer buffer is full, or a stream's queue is full; otherwise it completes at once.
    While the flow is not suspended and the consumer runs, the delivery now starts at once, in
    the consumer's task: done without waiting (nearly always), it costs no task at all; if it
    has to wait, it goes on as before, side by side with the suspension."""
    from mode.services import WaitResults

    original = Consumer.wait_first

    async def wait_first(self, *coros, timeout=None):
        deliver = coros[0] if coros else None
        if (timeout is None and asyncio.iscoroutine(deliver) and not self.suspend_flow.is_set()
                and not self._stopped.is_set() and not self._crashed.is_set()):
            try:
                yielded = deliver.send(None)
            except BaseException as exc:
                for other in coros[1:]:
                    if asyncio.iscoroutine(other):
                        other.close()  # never started
                if isinstance(exc, StopIteration):
                    return WaitResults([deliver], [exc.value], False)
                raise
            return await original(self, _resume(deliver, yielded), *coros[1:], timeout=timeout)
        return await original(self, *coros, timeout=timeout)

    Consumer.wait_first = wait_first


#: Every attribute of Faust and aiokafka that talkstream replaces or reads (module, class or
#: None, attribute). ``check_patch_targets()`` finds each before anything is patched.
PATCH_TARGETS: tuple[tuple[str, str | None, str], ...] = (
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_maybe_leave_group"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "reset_generation"),
    ("aiokafka.partitioner", None, "murmur2"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator", "add_message"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator", "drain_by_nodes"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator", "reenqueue"),
    ("aiokafka.producer.message_accumulator", "MessageAccumulator", "create_builder"),
    ("aiokafka.producer.sender", "SendProduceReqHandler", "do"),
    ("aiokafka.consumer.fetcher", "Fetcher", "seek_to"),
    ("faust.transport.producer", "ProducerBuffer", "max_messages"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_fetch_records"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "seek_to_committed"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_create_worker_consumer"),
    ("faust.transport.drivers.aiokafka", "Producer", "flush"),
    ("faust.transport.consumer", "Consumer", "getmany"),
    ("faust.transport.consumer", "Consumer", "_wait_next_records"),
    ("faust.transport.consumer", "Consumer", "wait_first"),
    ("faust.topics", "Topic", "_get_producer"),
    ("faust.tables.recovery", "Recovery", "_resume_streams"),
    ("faust.tables.recovery", "Recovery", "on_recovery_completed"),
    ("faust.streams", None, "_current_event"),
)

#: The versions the patches were written and tested for (``pyproject.toml`` says the same).
SUPPORTED = "faust-streaming>=0.15.2,<0.16 and aiokafka>=0.14,<0.15"


class UnsupportedLibraryVersion(RuntimeError):
    """An attribute talkstream patches is missing: Faust or aiokafka is a version it was not made for."""


def check_patch_targets(targets=PATCH_TARGETS) -> None:
    """Fail with the package, its version and the missing attribute when a patch target is gone."""
    import importlib
    from importlib import metadata

    for module_name, class_name, attribute in targets:
        package = "faust-streaming" if module_name.startswith("faust") else module_name.split(".")[0]
        try:
            owner = importlib.import_module(module_name)
            if class_name is not None:
                owner = getattr(owner, class_name)
            found = hasattr(owner, attribute)
        except (ImportError, AttributeError):
            found = False
        if not found:
            try:
                version = metadata.version(package)
            except metadata.PackageNotFoundError:
                version = "not installed"
            where = f"{module_name}.{class_name + '.' if class_name else ''}{attribute}"
            raise UnsupportedLibraryVersion(
                f"{package} {version} has no {where}, which talkstream patches: install {SUPPORTED}")


def apply() -> None:
    global _applied
    if _applied:
        return
    check_patch_targets()
    gc.GroupCoordinator._maybe_leave_group = _maybe_leave_group
    partitioner.murmur2 = murmur2  # the same hash, about twice as fast (``connectors.common.murmur2``)
    MessageAccumulator.add_message = _add_message
    MessageAccumulator.drain_by_nodes = _drain_by_nodes(MessageAccumulator.drain_by_nodes)
    MessageAccumulator.reenqueue = _reenqueue(MessageAccumulator.reenqueue)
    from aiokafka.consumer.fetcher import Fetcher
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Producer
    from faust.topics import Topic
    from faust.transport.producer import ProducerBuffer

    ProducerBuffer.max_messages = PRODUCER_BUFFER_MESSAGES
    _patch_seek_to(Fetcher)
    _patch_fetch_records(AIOKafkaConsumerThread)
    _patch_getmany(Consumer, _worker_assignment, _position)
    _patch_seek_to_committed(AIOKafkaConsumerThread)
    _patch_producer_flush(Producer)
    _patch_get_producer(Topic)
    _patch_delivery_wait(Consumer)
    Recovery._resume_streams = _seek_before_resume(Recovery._resume_streams)
    Recovery.on_recovery_completed = _seek_before_resume(Recovery.on_recovery_completed)
    _applied = True

