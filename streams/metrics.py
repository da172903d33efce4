"""Prometheus metrics of a worker (served at ``/metrics`` on the worker's web server)."""
from __future__ import annotations

from functools import lru_cache

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from schemas.deadletter import DEADLETTER_TOPIC


REGISTRY = CollectorRegistry()

EVENTS_IN = Counter("talkstream_events_in_total", "Messages consumed, per topic.", ["topic"], registry=REGISTRY)
EVENTS_OUT = Counter("talkstream_events_out_total", "Messages produced, per topic.", ["topic"], registry=REGISTRY)
DECISIONS = Counter("talkstream_decisions_total", "Flow decisions, per flow and action.", ["flow", "action"],
                    registry=REGISTRY)
WRITES = Counter("talkstream_writes_total", "Writes to a system, per outcome.", ["system", "op", "status"],
                 registry=REGISTRY)
ECHOES = Counter("talkstream_echoes_suppressed_total", "Our own writes read back and dropped.", ["flow"],
                 registry=REGISTRY)
MERGES = Counter("talkstream_merges_total", "Links where both sides changed between polls.", ["flow"],
                 registry=REGISTRY)
PARKED = Counter("talkstream_parked_total", "Times a link waited for a reference.", ["flow"], registry=REGISTRY)
DEADLETTERS = Counter("talkstream_deadletters_total", "Dead letters written, per stage.", ["stage"],
                      registry=REGISTRY)
API_LATENCY = Histogram("talkstream_api_request_seconds", "Duration of one sink batch call to a system.",
                        ["system", "entity"], registry=REGISTRY,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SYNC_LATENCY = Histogram("talkstream_sync_latency_seconds",
                         "Source modification time to target write acknowledged.", ["flow"], registry=REGISTRY,
                         buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300))
FLOW_TRIPPED = Gauge("talkstream_flow_tripped", "1 while the flow's circuit breaker has tripped (writes held).",
                     ["flow"], registry=REGISTRY)
FLOW_PAUSED = Gauge("talkstream_flow_paused", "1 while the flow is paused (writes held).", ["flow"],
                    registry=REGISTRY)
POLLS = Counter("talkstream_polls_total", "Polls, per system and entity.", ["system", "entity"], registry=REGISTRY)
LAST_POLL = Gauge("talkstream_last_poll_timestamp_seconds", "Time of the last successful poll.",
                  ["system", "entity"], registry=REGISTRY)
LINKS = Gauge("talkstream_links", "Links held by this worker, per flow and status.", ["flow", "status"],
              registry=REGISTRY)




@lru_cache(maxsize=1024)
def child(metric, *labels: str):
    """``metric.labels(*labels)``, remembered: counted per event, and ``labels()`` takes a lock and
    checks the label values every time (the label values here are few: topics, flows, actions)."""
    return metric.labels(*labels)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def record_actions(flow: str, actions: list[str]) -> None:
    for action in actions:
        name = action.split(":", 1)[0] if not action.startswith("skip:") else action
        child(DECISIONS, flow, name).inc()
        if action == "skip:echo":
            child(ECHOES, flow).inc()
        elif action == "merge":
            child(MERGES, flow).inc()
        elif action == "park":
            child(PARKED, flow).inc()


def count_dead_letter(entry) -> None:
    """A dead letter published (``connectors.common.deadletters``), by its stage."""
    child(DEADLETTERS, entry.stage).inc()
    child(EVENTS_OUT, DEADLETTER_TOPIC).inc()
