"""Test helper: follow a topic from offset 0 and wait for events (no sleeps)."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.change import ChangeEvent


class TopicWatcher:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.events: list[ChangeEvent] = []
        self.consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> "TopicWatcher":
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                         auto_offset_reset="earliest", group_id=None)
        await self.consumer.start()
        tp = TopicPartition(self.topic, 0)
        self.consumer.assign([tp])
        await self.consumer.seek_to_beginning(tp)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.consumer is not None
        await self.consumer.stop()

    async def drain(self, timeout_ms: int = 50) -> list[ChangeEvent]:
        assert self.consumer is not None
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=10000)
        new = [ChangeEvent.from_bytes(r.value) for recs in batch.values() for r in recs]
        self.events += new
        return new

    async def wait_for(self, predicate, *, timeout: float = 10.0) -> ChangeEvent:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for e in self.events:
                if predicate(e):
                    return e
            if loop.time() > deadline:
                raise AssertionError(f"no matching event on {self.topic} within {timeout} s")
            await self.drain()
