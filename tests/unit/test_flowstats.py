"""The console's activity series: one worker's counts, every worker's samples merged per flow."""
from __future__ import annotations

import math

import orjson

from streams import flowstats
from streams.flowstats import BUCKETS, FlowCounts, quantile, series


def test_nothing_counted_sends_nothing():
    assert FlowCounts().take("w1", 1000.0) is None


def test_a_sample_holds_the_counts_and_starts_afresh():
    counts = FlowCounts()
    counts.event("order-order", 3)
    counts.synced("order-order", 0.12)
    key, value = counts.take("w1", 1005.0)
    sample = orjson.loads(value)
    assert sample["worker"] == "w1" and sample["flows"]["order-order"]["events"] == 3
    assert sample["flows"]["order-order"]["latency"][BUCKETS.index(0.15)] == 1
    assert key == f"w1:{int(1005 // flowstats.STEP) % flowstats.RING}".encode()
    assert counts.take("w1", 1010.0) is None


def test_the_ring_of_keys_outlasts_the_window():
    # a compacted topic keeps one sample per key: a window's samples need keys of their own
    assert flowstats.RING * flowstats.STEP > flowstats.WINDOW


def test_quantiles_are_the_upper_bound_of_their_bucket():
    counts = [0] * len(BUCKETS)
    counts[BUCKETS.index(0.1)] = 98
    counts[BUCKETS.index(2)] = 2
    assert quantile(0.5, counts) == 0.1
    assert quantile(0.99, counts) == 2
    assert quantile(0.5, [0] * len(BUCKETS)) is None
    # beyond the last finite bound: that bound (not infinity)
    over = [0] * len(BUCKETS)
    over[-1] = 1
    assert quantile(0.5, over) == 300 and not math.isinf(quantile(0.99, over))


def sample(worker: str, at: float, flow: str, events: int, latencies: list[float] = ()) -> dict:
    counts = FlowCounts()
    counts.event(flow, events)
    for seconds in latencies:
        counts.synced(flow, seconds)
    return orjson.loads(counts.take(worker, at)[1])


def test_series_merges_the_workers_per_step_and_drops_old_samples():
    now = 10_009.0
    samples = [sample("w1", now - 5, "order-order", 30, [0.1, 0.1]),
               sample("w2", now - 5, "order-order", 20, [1.0]),
               sample("w1", now - 25, "order-order", 10),
               sample("w1", now - 2000, "order-order", 999),  # older than the window
               sample("w1", now - 5, "unknown-flow", 5)]  # not a flow of the mapping
    out = series(samples, ["order-order", "user-order"], now)
    points = out["order-order"]["points"]
    assert len(points) == int(flowstats.WINDOW // flowstats.STEP)
    assert points[-1]["events_per_s"] == 5.0  # (30 + 20) / 10 s
    assert points[-1]["p50"] == 0.1 and points[-1]["p99"] == 1
    assert points[-3]["events_per_s"] == 1.0 and points[-3]["p50"] is None
    assert points[-1]["t"] >= now > points[-2]["t"]
    assert out["order-order"]["events_per_s"] == round(60 / flowstats.WINDOW, 2)
    assert out["user-order"]["events_per_s"] == 0 and out["user-order"]["p99"] is None
