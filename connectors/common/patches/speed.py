"""Speed changes to Faust and aiokafka, installed in every process unless
``TALKSTREAM_PATCHES_OFF`` names them. Each stays only while the Apache Kafka benchmark
(``python -m bench.patches``: the initial load with all of them, and with each one off,
in the same run) shows it earns 10 % or more in records/s or worker CPU per record;
the figures are in each docstring.

**murmur2** (``murmur2``): aiokafka's key hash, the same function about twice as fast
(``connectors.common.murmur2``).

**A gap between produce requests** (``produce-request-gap``): aiokafka sends a broker
the next produce request as soon as the previous one is answered, so under load each
request carried few messages (measured on the embedded broker: about 10,000 requests
for an initial load of 21,000 records, 80,000 messages). The producer keeps a
broker's request slot for ``TALKSTREAM_PRODUCE_REQUEST_GAP_MS`` after each answer
(default 2 ms): the messages that come meanwhile leave together in the next request.
It also counts the requests (``talkstream_produce_requests_total``).

**Faust's producer buffer** (``producer-buffer``): it stops the streams, with a
warning, once it holds over 100 table changelog messages; a flow-topic batch message
writes up to 100 links and a commit during a load writes thousands of provisional
link states, so it holds ``PRODUCER_BUFFER_MESSAGES`` (the values the table holds
anyway: no copies).

**The producer without three turns of the event loop** (``get-producer``) and **a
delivery without four tasks** (``delivery-wait``): see their docstrings. Measured
together on the embedded broker: a load-only initial load from 940-990 to
1,180-1,260 records/s on the 2-core machine, the worker's CPU per record from about
0.95 to 0.75 ms.
"""
from __future__ import annotations

import asyncio

from aiokafka import partitioner

from connectors.common.murmur2 import murmur2
from connectors.common.patches import Patch

#: Table changelog messages Faust's producer buffer holds before it stops the streams and
#: logs "producer buffer full" (Faust: 100).
PRODUCER_BUFFER_MESSAGES = 10000

#: aiokafka's own murmur2, which the ``murmur2`` patch replaces (the tests compare the two).
AIOKAFKA_MURMUR2 = partitioner.murmur2


def _install_murmur2() -> None:
    partitioner.murmur2 = murmur2


_produce_request_gap = 0.0
#: Produce requests this process sent (the worker's ``talkstream_produce_requests_total``).
produce_requests = 0


def set_produce_request_gap(ms: float) -> None:
    """After a broker answered a produce request, the producer waits ``ms`` before it sends
    that broker the next one (every aiokafka producer in the process; 0: no wait)."""
    global _produce_request_gap
    _produce_request_gap = ms / 1000


def _install_produce_request_gap() -> None:
    from aiokafka.producer.sender import SendProduceReqHandler

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


MURMUR2 = Patch("murmur2", "speed", (("aiokafka.partitioner", None, "murmur2"),), _install_murmur2)
PRODUCE_REQUEST_GAP = Patch("produce-request-gap", "speed",
                            (("aiokafka.producer.sender", "SendProduceReqHandler", "do"),),
                            _install_produce_request_gap)
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

PATCHES = (MURMUR2, PRODUCE_REQUEST_GAP, PRODUCER_BUFFER, GET_PRODUCER, DELIVERY_WAIT, QUEUED_BATCHES)
