"""Follow a compacted topic into memory, in every worker: the mechanics ``streams.refs`` and
``streams.controlfollower`` share.

A follower reads every partition of its topic from the start (no consumer group) and keeps
reading; ``loaded`` is set once it has read up to the end offsets the topic had when it
started. It checks that the records written after it started come without holes: the
embedded broker (Tansu 0.6) can show a partition's record N+1 to a fetch before record N
when two producers write to it at once (measured: ``python -m bench.broker_gaps``, 1 to 5
records in 40,000 skipped by a follower and there when read again). On a hole it reads the
partition again from the missing offset, for up to ``HOLE_WAIT`` seconds; a hole that stays
is accepted with a warning. Records from before the start are not checked (compaction leaves
holes there on Apache Kafka; a new record never has one).
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from connectors.common.kafka import partitions

log = logging.getLogger(__name__)

#: Seconds a follower keeps reading a partition again from a missing offset before it goes on.
HOLE_WAIT = 5.0


class TopicFollower(Service):
    """Applies every record of ``topic`` with ``apply(key, value)`` (start it as a Faust app service)."""

    #: what the records are, for log lines
    what = "records"

    def __init__(self, bootstrap: str, topic: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bootstrap = bootstrap
        self.topic = topic
        self.loaded = asyncio.Event()  # read up to where the topic ended when the follower started
        self._consumer: AIOKafkaConsumer | None = None
        self._live_from: dict[TopicPartition, int] = {}  # end offsets at start: no holes from there on
        self._next: dict[TopicPartition, int] = {}  # the offset each partition's next record must have
        self._hole_since: dict[tuple[TopicPartition, int], float] = {}  # (partition, missing offset) -> seen

    def apply(self, key: bytes, value: bytes | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

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
        self._check_loaded()

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def _check_loaded(self) -> None:
        if not self.loaded.is_set() and all(self._next.get(tp, 0) >= end or end == 0
                                            for tp, end in self._live_from.items()):
            self.loaded.set()

    @Service.task
    async def _follow(self) -> None:
        while not self.should_stop:
            if self._consumer is None:
                await asyncio.sleep(0.1)
                continue
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            except Exception as exc:  # the broker went away for a moment: keep following
                log.warning("%s: reading %s failed: %s", self.what, self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                again = self.take(tp, records, time.monotonic())
                if again is not None:
                    self._consumer.seek(tp, again)
            self._check_loaded()

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
                log.warning("%s: %s[%s] offsets %s to %s never came; going on",
                            self.what, tp.topic, tp.partition, expected, record.offset - 1)
            self._hole_since.pop((tp, expected), None)
            self._next[tp] = record.offset + 1
            if record.key is not None:
                self.apply(record.key, record.value)
        return None
