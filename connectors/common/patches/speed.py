"""Speed changes to Faust and aiokafka, installed in every process unless
``TALKSTREAM_PATCHES_OFF`` names them. Each stays only while the Apache Kafka benchmark
(``python -m bench.patches``: the initial load with all of them, and with each one off,
in the same run) shows it earns 10 % or more in records/s or worker CPU per record;
the figures are in each docstring.

Gone, because leaving them out cost less than 10 % on Apache Kafka (``python -m
bench.patches --scale 0.5 --rounds 2``, 10,500 records, RocksDB tables, medians
against all changes on: 1,074 records/s and 0.852 ms of worker CPU per record):
``murmur2`` (aiokafka's key hash replaced by a faster one: without it 1,020
records/s, 0.845 ms) and ``produce-request-gap`` (a 2 ms pause after each produce
answer, so that a request carries more messages: without it 1,031 records/s,
0.820 ms).

**Faust's producer buffer** (``producer-buffer``): it stops the streams, with a
warning, once it holds over 100 table changelog messages; a flow-topic batch message
writes up to 100 links and a commit during a load writes thousands of provisional
link states, so it holds ``PRODUCER_BUFFER_MESSAGES`` (the values the table holds
anyway: no copies). On Apache Kafka without it: 759 records/s (0.71), 0.914 ms (1.07).

**The producer without three turns of the event loop** (``get-producer``) and **a
delivery without four tasks** (``delivery-wait``): see their docstrings. Measured
together on the embedded broker: a load-only initial load from 940-990 to
1,180-1,260 records/s on the 2-core machine, the worker's CPU per record from about
0.95 to 0.75 ms. On Apache Kafka without ``get-producer``: 869 records/s (0.81), 1.003
ms (1.18); without ``delivery-wait``: 720 records/s (0.67), 0.900 ms (1.06).

**Queued batches** (``queued-batches``): aiokafka keeps one open batch per partition,
and ``send()`` waits while a full one is not yet taken into a request; normal batches
now queue ``QUEUED_FULL_BATCHES`` deep per partition instead (the embedded broker's
``single-record-batches`` workaround includes it). On Apache Kafka without it: 952
records/s (0.89), 0.897 ms (1.05).

Every figure: ``python -m bench.patches --scale 0.5 --rounds 2`` (10,500 records,
Apache Kafka 4.1.1 with one node, RocksDB tables, 2 cores), medians of two rounds,
against 1,074 records/s and 0.852 ms with every change on; in brackets the ratio.
Rounds of the same variant differed by up to 15 %, so the 0.89 of ``queued-batches``
is the nearest to the line.
"""
from __future__ import annotations

import asyncio

from connectors.common.patches import Patch

#: Table changelog messages Faust's producer buffer holds before it stops the streams and
#: logs "producer buffer full" (Faust: 100).
PRODUCER_BUFFER_MESSAGES = 10000


def _install_producer_buffer() -> None:
    from faust.transport.producer import ProducerBuffer

    ProducerBuffer.max_messages = PRODUCER_BUFFER_MESSAGES


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


def _install_get_producer() -> None:
    from faust.topics import Topic

    _patch_get_producer(Topic)


def _install_delivery_wait() -> None:
    from faust.transport.consumer import Consumer

    _patch_delivery_wait(Consumer)


def _install_queued_batches() -> None:
    from aiokafka.producer.message_accumulator import MessageAccumulator

    from connectors.common.patches.embedded_broker import add_message

    MessageAccumulator.add_message = add_message


PRODUCER_BUFFER = Patch("producer-buffer", "speed", (("faust.transport.producer", "ProducerBuffer", "max_messages"),),
                        _install_producer_buffer)
GET_PRODUCER = Patch("get-producer", "speed", (("faust.topics", "Topic", "_get_producer"),), _install_get_producer)
DELIVERY_WAIT = Patch("delivery-wait", "speed", (("faust.transport.consumer", "Consumer", "wait_first"),),
                      _install_delivery_wait)
#: Normal batches queue ``QUEUED_FULL_BATCHES`` deep per partition instead of ``send()`` waiting
#: for the full one to drain (the embedded broker's ``single-record-batches`` includes it).
QUEUED_BATCHES = Patch("queued-batches", "speed",
                       (("aiokafka.producer.message_accumulator", "MessageAccumulator", "add_message"),),
                       _install_queued_batches)

PATCHES = (PRODUCER_BUFFER, GET_PRODUCER, DELIVERY_WAIT, QUEUED_BATCHES)
