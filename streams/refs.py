"""Product references shared by every worker: Customcrm product Id <-> productNo.

An order's lines name Customcrm products; the order's link may live on another
worker than its products' links. The link agent that links a product writes
one record to the compacted topic ``talkstream.product-refs``
(``c:<Customcrm Id>`` -> productNo); every worker reads that topic from the
start, all partitions, into a dict and its reverse (``b:<productNo>`` ->
Customcrm Id), and keeps reading. A worker sees its own writes at once.
(Topics written by earlier versions also hold ``b:`` records; they are read
into the reverse map.)

The follower checks that the records written after it started come without
holes. The embedded broker (Tansu 0.6) can show a partition's record N+1 to a
fetch before record N when two producers write to it at once (measured:
``python -m bench.broker_gaps``, 1 to 5 records in 40,000 skipped by a follower
and there when read again), so every worker writing references could leave
another without one, and an order that needs it parked until its bound (seen:
1 two-worker load in 23). On a hole the follower reads the partition again from
the missing offset, for up to ``HOLE_WAIT`` seconds; a hole that stays is
accepted with a warning. Records from before the start are not checked
(compaction leaves holes there on Apache Kafka; a new record never has one).

Faust's GlobalTable was meant for this, but with two workers on the embedded
broker one worker never saw the other's writes, not even with
``synchronize_all_active_partitions`` (faust-streaming #283): orders parked
until their bound and were dead-lettered. ``len()`` grows whenever a new
reference arrives, which is what the wake-up check for parked orders watches.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from connectors.common.kafka import partitions, read_to_end

log = logging.getLogger(__name__)

REFS_TOPIC = read_to_end("talkstream.product-refs")

#: Seconds the follower keeps reading a partition again from a missing offset before it goes on.
HOLE_WAIT = 5.0


class SharedRefs(Service):
    """The replicated view of ``talkstream.product-refs`` (start it as a Faust app service)."""

    def __init__(self, bootstrap: str, topic: str = REFS_TOPIC, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.topic = topic
        self.data: dict[str, str] = {}  # "c:<source id>" -> target id, "b:<target id>" -> source id
        self._consumer: AIOKafkaConsumer | None = None
        self._live_from: dict[TopicPartition, int] = {}  # end offsets at start: no holes from there on
        self._next: dict[TopicPartition, int] = {}  # the offset each partition's next record must have
        self._hole_since: dict[tuple[TopicPartition, int], float] = {}  # (partition, missing offset) -> seen
        self._fresh: list[str] = []  # source ids linked since the last take_fresh()

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def take_fresh(self) -> list[str]:
        """The Customcrm product ids that got a reference since the last call (own or followed)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def put(self, source_id: str, target_id: str) -> bool:
        """Our own reference (the caller sends ``c:<source_id>`` to the topic when this returns
        True): visible here at once, both ways. False: already known, nothing to send."""
        return self._set(f"c:{source_id}", target_id)

    def _set(self, key: str, value: str | None) -> bool:
        """Apply one record of the topic (``None``: a tombstone); a ``c:`` record also sets its reverse."""
        old = self.data.get(key)
        if old == value:
            return False
        kind, _, ident = key.partition(":")
        if kind == "c" and old is not None and self.data.get(f"b:{old}") == ident:
            del self.data[f"b:{old}"]  # re-linked: the old productNo no longer points here
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
            if kind == "c":
                self.data[f"b:{value}"] = ident
                self._fresh.append(ident)
        return True

    async def on_start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await consumer.start()
        try:
            tps = await partitions(consumer, self.topic)
            consumer.assign(tps)
            self._live_from = dict(await consumer.end_offsets(tps))
            await consumer.seek_to_beginning(*tps)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer  # followed only now: where the live part starts is known

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @Service.task
    async def _follow(self) -> None:
        while not self.should_stop:
            if self._consumer is None:
                await asyncio.sleep(0.1)
                continue
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            except Exception as exc:  # the broker went away for a moment: keep following
                log.warning("product references: reading %s failed: %s", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                again = self.take(tp, records, time.monotonic())
                if again is not None:
                    self._consumer.seek(tp, again)

    def take(self, tp: TopicPartition, records, now: float) -> int | None:
        """Apply a partition's fetched records in order. An offset: a record is missing before
        the next one (the broker showed a later record first); read the partition again from it."""
        for record in records:
            expected = self._next.get(tp)
            if expected is not None and record.offset < expected:
                continue  # read again after a hole: applied already
            if expected is not None and record.offset > expected and expected >= self._live_from.get(tp, 0):
                since = self._hole_since.setdefault((tp, expected), now)
                if now - since < HOLE_WAIT:
                    return expected
                log.warning("product references: %s[%s] offsets %s to %s never came; going on",
                            tp.topic, tp.partition, expected, record.offset - 1)
            self._hole_since.pop((tp, expected), None)
            self._next[tp] = record.offset + 1
            if record.key is not None:
                self._set(record.key.decode(), record.value.decode() if record.value is not None else None)
        return None
