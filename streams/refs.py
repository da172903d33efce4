"""Product references shared by every worker: Customcrm product Id <-> productNo.

An order's lines name Customcrm products; the order's link may live on another
worker than its products' links. The link agent that links a product writes
one record to the compacted topic ``talkstream.product-refs``
(``c:<Customcrm Id>`` -> productNo); every worker reads that topic from the
start, all partitions, into a dict and its reverse (``b:<productNo>`` ->
Customcrm Id), and keeps reading. A worker sees its own writes at once.
(Topics written by earlier versions also hold ``b:`` records; they are read
into the reverse map.)

The follower (``streams.follower``) checks that the records written after it
started come without holes: on the embedded broker a worker could otherwise be
left without another's reference, and an order that needs it parked until its
bound (seen: 1 two-worker load in 23).

Faust's GlobalTable was meant for this, but with two workers on the embedded
broker one worker never saw the other's writes, not even with
``synchronize_all_active_partitions`` (faust-streaming #283): orders parked
until their bound and were dead-lettered. ``len()`` grows whenever a new
reference arrives, which is what the wake-up check for parked orders watches.
"""
from __future__ import annotations

from connectors.common.kafka import read_to_end
from streams.follower import HOLE_WAIT, TopicFollower  # noqa: F401  (HOLE_WAIT: read by the tests)

REFS_TOPIC = read_to_end("talkstream.product-refs")


class SharedRefs(TopicFollower):
    """The replicated view of ``talkstream.product-refs`` (start it as a Faust app service)."""

    what = "product references"

    def __init__(self, bootstrap: str, topic: str = REFS_TOPIC, **kwargs) -> None:
        super().__init__(bootstrap, topic, **kwargs)
        self.data: dict[str, str] = {}  # "c:<source id>" -> target id, "b:<target id>" -> source id
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

    def apply(self, key: bytes, value: bytes | None) -> None:
        self._set(key.decode(), value.decode() if value is not None else None)

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
