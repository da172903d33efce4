"""The rebalance fixes of ``connectors.common.patches.faust_fixes``, on stand-ins for Faust's classes.

The loss they fix (a worker joining a running one lost change events) needs two
workers, a load and luck to show; ``tests/chaos`` runs that. Here each rule is
checked on its own: records fetched before a seek or a rebalance are not
yielded, recovery seeks before it resumes the stream partitions, and a record
that skips offsets on the streams' own topics makes the partition be read again.
"""
from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import NamedTuple

from connectors.common.patches import faust_fixes


class FakeFetcher:
    def __init__(self) -> None:
        self.positions: dict = {}

    def seek_to(self, tp, offset):
        self.positions[tp] = offset


class TP(NamedTuple):
    topic: str
    partition: int


def _tp(partition: int, topic: str = "flow") -> TP:
    return TP(topic, partition)


class Stamp:
    """What the consumer thread saw when aiokafka returned a batch."""

    assignment = object()


def _consumer_class(records, on_yield=None, contiguous=(), fetcher=None):
    """A stand-in for Faust's Consumer: ``_wait_next_records`` returns ``records`` stamped with the
    current assignment, ``getmany`` yields them (calling ``on_yield(consumer, i)`` after each).
    Topics in ``contiguous`` are the streams' own (acks enabled); ``seek`` goes to ``fetcher``."""
    class FakeConsumer:
        def __init__(self) -> None:
            self.assignment = Stamp.assignment
            self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic in contiguous))
            self.seeks: list = []
            self.positions: dict = {}  # (topic, partition) -> aiokafka's next offset to return
            self.flow_active = True

        async def seek(self, tp, offset):
            self.seeks.append((tp.partition, offset))
            fetcher.seek_to(tp, offset)

        async def _wait_next_records(self, timeout):
            return faust_fixes.Fetched({}, self.assignment, next(faust_fixes._seeks)), None

        async def getmany(self, timeout):
            await self._wait_next_records(timeout)
            for i, (tp, offset) in enumerate(records):
                yield tp, SimpleNamespace(offset=offset)
                if on_yield:
                    on_yield(self, i)

    faust_fixes._patch_getmany(FakeConsumer, lambda consumer: consumer.assignment,
                                lambda consumer, key: consumer.positions.get(key))
    return FakeConsumer


def _drain(consumer) -> list:
    """Every (partition, offset) ``getmany`` yields."""
    async def go():
        return [(tp.partition, message.offset) async for tp, message in consumer.getmany(timeout=1.0)]
    return asyncio.run(go())


def _batch(records, topic, fetcher, after=None):
    """A consumer for one batch of ``records`` on the contiguous ``topic``; ``after``: the consumer
    of the previous batch, whose record of expected offsets it carries on."""
    consumer = _consumer_class(records, contiguous={topic}, fetcher=fetcher)()
    if after is not None:
        consumer._talkstream_continuity = after._talkstream_continuity
    return consumer


def _recording_consumer(calls: list):
    """A stand-in for Faust's consumer during recovery, recording resumes and seeks in ``calls``."""
    class FakeFaustConsumer:
        def resume_partitions(self, tps):
            calls.append(("resume", tps))

        async def perform_seek(self):
            calls.append(("seek",))

    return FakeFaustConsumer()


def _fetcher():
    fetcher_cls = type("F", (FakeFetcher,), {})
    faust_fixes._patch_seek_to(fetcher_cls)
    return fetcher_cls()


def test_records_of_a_partition_sought_during_the_batch_are_not_yielded():
    fetcher = _fetcher()
    p0, p1 = _tp(0, "seek-test"), _tp(1, "seek-test")
    records = [(p0, 100), (p1, 200), (p0, 101), (p1, 201), (p0, 102)]

    def seek_after_second(consumer, i):
        if i == 1:
            fetcher.seek_to(p0, 50)  # e.g. recovery seeks p0 back to its committed offset

    got = _drain(_consumer_class(records, seek_after_second)())
    assert got == [(0, 100), (1, 200), (1, 201)]  # p0's 101 and 102 came from before its seek
    assert fetcher.positions[p0] == 50


def test_a_batch_returned_after_a_seek_is_yielded_whole():
    """The stamp is taken when aiokafka returns the records, not when the fetch began: a seek
    while the fetch waited must not drop what was fetched from the new position."""
    fetcher = _fetcher()
    p0 = _tp(0, "seek-after-test")
    fetcher.seek_to(p0, 50)
    assert _drain(_consumer_class([(p0, 50), (p0, 51)])()) == [(0, 50), (0, 51)]


def test_a_rebalance_during_the_batch_ends_it():
    def rebalance_after_first(consumer, i):
        if i == 0:
            consumer.assignment = object()  # aiokafka made a new assignment

    records = [(_tp(0, "gen-test"), 1), (_tp(1, "gen-test"), 7), (_tp(0, "gen-test"), 2)]
    assert _drain(_consumer_class(records, rebalance_after_first)()) == [(0, 1)]


def test_recovery_seeks_before_it_resumes_the_stream_partitions():
    calls: list = []
    consumer = _recording_consumer(calls)

    class FakeRecovery:
        app = SimpleNamespace(consumer=consumer)

        async def on_recovery_completed(self, generation_id=0):  # Faust's order: resume, then seek
            self.app.consumer.resume_partitions({"flow-0"})
            await self.app.consumer.perform_seek()
            calls.append(("done",))

    step = faust_fixes._seek_before_resume(FakeRecovery.on_recovery_completed)
    asyncio.run(step(FakeRecovery()))
    assert calls == [("seek",), ("resume", {"flow-0"}), ("done",)]
    # the consumer's own methods are back afterwards
    assert "resume_partitions" not in vars(consumer) and "perform_seek" not in vars(consumer)


def test_recovery_that_never_seeks_still_resumes():
    calls: list = []

    class FakeRecovery:
        app = SimpleNamespace(consumer=_recording_consumer(calls))

        async def on_recovery_completed(self, generation_id=0):
            self.app.consumer.resume_partitions({"flow-0"})  # then "rebalancing again": no seek

    asyncio.run(faust_fixes._seek_before_resume(FakeRecovery.on_recovery_completed)(FakeRecovery()))
    assert calls == [("resume", {"flow-0"})]


def test_a_record_that_skips_offsets_is_not_handed_over_and_the_partition_is_read_again():
    """The last guard: on the streams' own topics offsets are contiguous, so 4873 right after a
    seek to 3242 means records are missing: read again from 3242 instead of losing 3242..4872."""
    fetcher = _fetcher()
    p2 = _tp(2, "jump-test")
    fetcher.seek_to(p2, 3242)  # recovery's seek to the committed offset
    consumer = _batch([(p2, 4873), (p2, 4874)], "jump-test", fetcher)
    assert _drain(consumer) == []
    assert consumer.seeks == [(2, 3242)]
    # read again from the seek: handed over in order
    again = _batch([(p2, 3242), (p2, 3243)], "jump-test", fetcher, after=consumer)
    assert _drain(again) == [(2, 3242), (2, 3243)]


def test_offsets_really_missing_on_the_broker_are_accepted_after_one_retry():
    fetcher = _fetcher()
    p0 = _tp(0, "hole-test")
    fetcher.seek_to(p0, 10)
    consumer = _batch([(p0, 10), (p0, 15)], "hole-test", fetcher)
    assert _drain(consumer) == [(0, 10)]
    assert consumer.seeks == [(0, 11)]
    second = _batch([(p0, 15), (p0, 16)], "hole-test", fetcher, after=consumer)
    assert _drain(second) == [(0, 15), (0, 16)]  # the broker has no 11..14: go on, with a warning


def test_other_topics_may_skip_offsets():
    """Changelogs may be compacted: their records are never held back."""
    p0 = _tp(0, "compacted-test")
    consumer = _consumer_class([(p0, 1), (p0, 9)], contiguous=set(), fetcher=_fetcher())()
    assert _drain(consumer) == [(0, 1), (0, 9)]


def test_continuity_starts_over_after_a_rebalance():
    check = faust_fixes.Continuity().check
    key = ("rebalance-test", 0)
    first, second = object(), object()
    assert check(first, key, 5) is None and check(first, key, 6) is None
    assert check(second, key, 2) is None  # the new owner of the partition starts at its commit
    assert check(second, key, 3) is None


def test_records_aiokafka_moved_past_without_handing_over_are_read_again():
    """The guard's blind spot closed: records dropped at the end of a partition show no jump (no
    later record comes), but aiokafka's position is past them; the next fetch reads them again."""
    fetcher = _fetcher()
    p0 = _tp(0, "tail-test")
    first = _batch([(p0, 10), (p0, 11)], "tail-test", fetcher)
    assert _drain(first) == [(0, 10), (0, 11)]
    second = _batch([], "tail-test", fetcher, after=first)
    second.positions[("tail-test", 0)] = 15  # 12..14 were returned by aiokafka but never handed over
    _drain(second)
    assert second.seeks == [(0, 12)]


def test_records_left_at_a_rebalance_are_not_taken_for_dropped():
    """While the flow is stopped (a rebalance), Faust leaves fetched records on purpose."""
    fetcher = _fetcher()
    p0 = _tp(0, "stopped-test")
    first = _batch([(p0, 10), (p0, 11)], "stopped-test", fetcher)
    assert _drain(first) == [(0, 10), (0, 11)]
    second = _batch([], "stopped-test", fetcher, after=first)
    second.positions[("stopped-test", 0)] = 15
    second.flow_active = False
    _drain(second)
    assert second.seeks == []


class FakeAiokafkaConsumer:
    """aiokafka's consumer as ``seek_to_committed`` uses it: committed offsets, beginnings, seeks."""

    def __init__(self, committed: dict, beginnings: dict) -> None:
        self.committed, self.beginnings, self.seeks = committed, beginnings, {}

    async def seek_to_committed(self):  # aiokafka seeks only offsets > 0
        for tp, offset in self.committed.items():
            if offset and offset > 0:
                self.seeks[tp] = offset
        return dict(self.committed)

    async def beginning_offsets(self, tps):
        return {tp: self.beginnings[tp] for tp in tps}

    def seek(self, tp, offset):
        self.seeks[tp] = offset


def test_partitions_with_nothing_committed_are_sought_to_their_beginning():
    """The loss seen with two workers: records a worker fetched before any commit and then left
    while its flow was stopped were skipped, because the seek "back to the committed offsets"
    left partitions without a commit where the fetcher had got to (measured: a partition's first
    record handed over was offset 95). Now they start again at their first offset."""
    flow0, flow1, flow2, changelog = _tp(0), _tp(1), _tp(2), _tp(0, "app-links-changelog")
    consumer = FakeAiokafkaConsumer(committed={flow0: 40, flow1: None, flow2: 0, changelog: None},
                                    beginnings={flow1: 0, flow2: 0, changelog: 0})
    committed = asyncio.run(faust_fixes._seek_to_committed_or_beginning(consumer, {"app-links-changelog"}))
    assert consumer.seeks == {flow0: 40, flow1: 0, flow2: 0}  # the changelog is left to Faust's recovery
    assert committed == {flow0: 40, flow1: None, flow2: 0, changelog: None}  # what Faust records


def test_records_dropped_before_any_was_handed_over_are_read_again():
    """The guard's second blind spot closed: after a rebalance and the seek of a partition, no
    record of it handed over yet, but aiokafka's position is past the seek: read again from it."""
    fetcher = _fetcher()
    p3 = _tp(3, "fresh-test")
    fetcher.seek_to(p3, 0)  # recovery: nothing committed, so the partition's beginning
    consumer = _batch([], "fresh-test", fetcher)
    consumer.positions[("fresh-test", 3)] = 95  # 0..94 returned by aiokafka, never handed over
    _drain(consumer)
    assert consumer.seeks == [(3, 0)]


def test_a_changelog_sought_by_recovery_is_not_taken_for_dropped():
    """Recovery seeks changelog partitions and reads them through without the continuity check
    (they may be compacted): their position past the seek is not a loss."""
    fetcher = _fetcher()
    fetcher.seek_to(_tp(0, "seek-changelog-test"), 0)
    consumer = _batch([], "stream-test", fetcher)  # only "stream-test" is a contiguous topic
    consumer.positions[("seek-changelog-test", 0)] = 500
    _drain(consumer)
    assert consumer.seeks == []
