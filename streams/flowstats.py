"""Per-flow activity over the last minutes, for the console's charts (topic ``talkstream.flowstats``).

Each worker counts, per flow, the change events its link stage handled and the
edit-to-other-side latency of each write that succeeded (a record's change time
at its source to the write's acknowledgement: ``talkstream_sync_latency_seconds``).
Every ``STEP`` seconds it publishes what it counted since the last time as one
sample (nothing when it counted nothing). Any worker's console merges every
worker's samples of the last ``WINDOW`` seconds into one series per flow: events
per second, and the latency's p50 and p99 per step. Pure functions over plain
data; the worker sends and the console reads (``streams.console.data``).

The topic is compacted with a ring of keys per worker (``worker:slot``) and
deleted after an hour, so it holds about one window per worker.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import orjson

STATS_TOPIC = "talkstream.flowstats"
#: Seconds per sample, and the span the console shows.
STEP = 10.0
WINDOW = 900.0
#: Upper bounds (seconds) of the latency buckets: those of ``talkstream_sync_latency_seconds``.
BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, math.inf)
#: Keys per worker on the compacted topic: a little more than one window of samples.
RING = int(WINDOW // STEP) + 6
TOPIC_CONFIGS = {"cleanup.policy": "compact,delete", "retention.ms": str(3600 * 1000)}


def bucket_of(seconds: float) -> int:
    """The index of the latency bucket ``seconds`` falls in."""
    for index, bound in enumerate(BUCKETS):
        if seconds <= bound:
            return index
    return len(BUCKETS) - 1


@dataclass
class FlowCounts:
    """One worker's counts since its last sample."""

    events: Counter = field(default_factory=Counter)
    latency: dict[str, list[int]] = field(default_factory=dict)

    def event(self, flow: str, count: int = 1) -> None:
        self.events[flow] += count

    def synced(self, flow: str, seconds: float) -> None:
        counts = self.latency.setdefault(flow, [0] * len(BUCKETS))
        counts[bucket_of(seconds)] += 1

    def take(self, worker: str, now: float) -> tuple[bytes, bytes] | None:
        """The sample of what was counted (key, value), or None when nothing was; starts afresh."""
        if not self.events and not self.latency:
            return None
        flows = {flow: {"events": self.events.get(flow, 0), "latency": self.latency.get(flow, [])}
                 for flow in {*self.events, *self.latency}}
        self.events.clear()
        self.latency.clear()
        slot = int(now // STEP)
        value = orjson.dumps({"worker": worker, "at": now, "step": STEP, "flows": flows})
        return f"{worker}:{slot % RING}".encode(), value


def quantile(q: float, counts: list[int]) -> float | None:
    """The ``q`` quantile of a latency histogram: the upper bound of the bucket it falls in, or,
    in the open last bucket, the last finite bound (None: no observation)."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, n in enumerate(counts):
        seen += n
        if seen >= rank and n:
            bound = BUCKETS[index]
            return BUCKETS[index - 1] if math.isinf(bound) else bound
    return None


def series(samples: list[dict], flows: list[str], now: float, window: float = WINDOW,
           step: float = STEP) -> dict[str, dict]:
    """Every worker's samples merged, per flow: one point per ``step`` over the last ``window``
    seconds, oldest first (``{"t": end of the step, "events_per_s", "p50", "p99"}``, latencies
    None in a step with no write), and the whole window's events per second and latencies."""
    steps = int(window // step)
    last = math.floor(now / step)
    first = last - steps + 1
    events = {flow: [0] * steps for flow in flows}
    latency = {flow: [[0] * len(BUCKETS) for _ in range(steps)] for flow in flows}
    for sample in samples:
        index = math.floor(float(sample.get("at", 0)) / step) - first
        if not 0 <= index < steps:
            continue
        for flow, counts in (sample.get("flows") or {}).items():
            if flow not in events:
                continue
            events[flow][index] += int(counts.get("events", 0))
            for bucket, n in enumerate((counts.get("latency") or [])[:len(BUCKETS)]):
                latency[flow][index][bucket] += int(n)
    out = {}
    for flow in flows:
        whole = [sum(column) for column in zip(*latency[flow])]
        out[flow] = {
            "points": [{"t": (first + i + 1) * step, "events_per_s": round(events[flow][i] / step, 2),
                        "p50": quantile(0.5, latency[flow][i]), "p99": quantile(0.99, latency[flow][i])}
                       for i in range(steps)],
            "events_per_s": round(sum(events[flow]) / window, 2),
            "p50": quantile(0.5, whole), "p99": quantile(0.99, whole),
        }
    return out
