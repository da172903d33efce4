"""The messages on ``talkstream.flow.events`` (pure): one link's, or a batch of many links'.

A flow message is a JSON object keyed by its link key: ``{"kind": "change" |
"result" | "tick" | "redrive", "flow": <flow id>, ...}``. The route agent's
change events, the sinks' write results and the wake-up timer's ticks come many
at a time, so they travel as one ``{"kind": "batch", "messages": [{"key": <link
key>, "kind": ..., "flow": ..., ...}, ...]}`` per partition: a produce and a
consume per batch instead of per link. Every member's link key is on the
partition the batch is sent to (its key is the first member's), and members
keep their order, so each link still sees its messages in order on its own
partition. The link agent dead-letters a member whose link is on another
partition (a foreign producer, or workers configured with different partition
counts) instead of splitting that link's state. (``talkstream deadletters
redrive`` sends single messages.)
"""
from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from functools import lru_cache
from typing import TypeVar

import orjson
from aiokafka.partitioner import murmur2

#: Members per batch message: each member writes its link to the ``links`` changelog, and
#: Faust holds the stream while its changelog buffer holds over 100 messages.
BATCH_MEMBERS = 100

T = TypeVar("T")

#: Link keys whose partition is remembered (about 150 bytes each).
PARTITION_CACHE = 4096


@lru_cache(maxsize=PARTITION_CACHE)
def partition_of(key: str, partitions: int) -> int:
    """The partition the producer's default partitioner gives a link key: Kafka's murmur2 of the
    key, its sign bit cleared, modulo the partition count (remembered for recent keys: a link's
    key is hashed by the route, the link agent, its commands and its result, usually within a
    second, and murmur2 is pure Python)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def encode(kind: str, flow: str, **body) -> bytes:
    """One link's message."""
    return orjson.dumps({"kind": kind, "flow": flow, **body})


def chunks_by(items: Iterable[T], group: Callable[[T], Hashable],
              limit: int = BATCH_MEMBERS) -> list[list[T]]:
    """``items`` grouped by ``group`` (e.g. their partition), each group in chunks of at most
    ``limit``, items in their given order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    return [members[i:i + limit] for members in groups.values() for i in range(0, len(members), limit)]


def batches(messages: Iterable[tuple[str, dict]], partition: Callable[[str], int],
            limit: int = BATCH_MEMBERS) -> list[tuple[bytes, bytes]]:
    """(key, value) of the batch messages carrying ``(link key, message)`` pairs: one per
    partition (more when a partition has over ``limit`` members), members in the given order."""
    members = ({"key": key, **message} for key, message in messages)
    return [(chunk[0]["key"].encode(), orjson.dumps({"kind": "batch", "messages": chunk}))
            for chunk in chunks_by(members, lambda member: partition(member["key"]), limit)]


def unpack(key: bytes, value: bytes) -> list[tuple[str, dict]]:
    """The ``(link key, message)`` pairs of one flow-topic record (raises on an unreadable one)."""
    message = orjson.loads(value)
    if message["kind"] == "batch":
        return [(member["key"], member) for member in message["messages"]]
    return [(key.decode(), message)]
