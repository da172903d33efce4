"""The start-up self-checks of the broker's defects: whether producers need single-record
batches, and which of the embedded broker's workarounds a worker installs.

The embedded broker (Tansu 0.6) reports a partition's end offset as the base
offset of the last record batch + 1. Faust reads a changelog only up to that
end offset when it recovers a table, so with multi-record batches a restarted
worker silently loses the last updates of its tables. With one record per
batch the end offsets are exact.

``single_record_batches(settings)``: ``on``/``off`` are taken as given;
``auto`` runs the start-up self-check (produce a few records in one batch,
compare the end offset with what was written) and turns the protection on
when the broker's offsets are wrong, or when the check cannot run.

``idle_fetch_waits_out(broker_url)`` and ``generation_zero(broker_url)``: the
embedded broker's other two defects (``connectors.common.patches.embedded_broker``
says what each costs); where a check cannot run, the workaround is installed
(each is harmless where the defect is absent).

``batches_per_request(broker_url)``: with the protection on, how many of one
partition's single-record batches one produce request may carry. aiokafka
keeps one produce request in flight per broker and puts one batch per
partition in it, so a busy changelog partition got one record per round trip.
Tansu takes several batches per partition in one request (checked at start-up:
``kafka.several_batches_per_request``); Apache Kafka does not, and needs no
protection.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from connectors.common.kafka import (bootstrap_servers, end_offsets_are_exact, first_generation,
                                     several_batches_per_request)
from connectors.common.kafka import idle_fetch_waits_out as idle_fetch_waits_out_check

log = logging.getLogger(__name__)

_cache: dict[str, bool] = {}


#: Single-record batches of one partition per produce request where the broker takes several.
BATCHES_PER_REQUEST = 32

_per_request: dict[str, int] = {}


def _run_check(check, broker_url: str, timeout: float, what: str) -> bool | None:
    result: dict[str, bool | None] = {"ok": None}

    def target() -> None:
        try:
            result["ok"] = asyncio.run(asyncio.wait_for(check(bootstrap_servers(broker_url)), timeout))
        except Exception as exc:  # the broker may be down: decide safely
            log.warning("broker %s check could not run: %s", what, exc)

    # its own thread and event loop: callers may already be inside one
    t = threading.Thread(target=target, name="broker-self-check", daemon=True)
    t.start()
    t.join(timeout + 5)
    return result["ok"]


def run_self_check(broker_url: str, timeout: float = 20.0) -> bool | None:
    """True: exact end offsets; False: wrong; None: the check could not run."""
    return _run_check(end_offsets_are_exact, broker_url, timeout, "end-offset self-check")


def batches_per_request(broker_url: str) -> int:
    """How many single-record batches of one partition a produce request may carry (1 unless
    the broker was seen to take several)."""
    if broker_url not in _per_request:
        ok = _run_check(several_batches_per_request, broker_url, 20.0, "several-batches-per-request")
        _per_request[broker_url] = BATCHES_PER_REQUEST if ok else 1
        log.info("broker %s: up to %d single-record batches per partition in one produce request",
                 broker_url, _per_request[broker_url])
    return _per_request[broker_url]


def single_record_batches(mode: str, broker_url: str) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    if broker_url not in _cache:
        exact = run_self_check(broker_url)
        if exact is False:  # expected on the embedded broker: said once, in the worker's log (info)
            log.info(
                "broker %s reports wrong end offsets for multi-record batches: "
                "sending one record per batch to the topics read to their end (table recovery "
                "would lose updates otherwise)",
                broker_url,
            )
        elif exact is True:
            log.info("broker %s reports exact end offsets: producers use normal batches", broker_url)
        elif exact is None:
            log.warning("broker self-check failed: sending one record per batch to be safe")
        _cache[broker_url] = exact is not True
    return _cache[broker_url]


_slow_fetch: dict[str, bool] = {}
_generation_zero: dict[str, bool] = {}


def idle_fetch_waits_out(broker_url: str) -> bool:
    """Does a waiting fetch wait out its whole ``fetch_max_wait_ms`` though a record arrived?"""
    if broker_url not in _slow_fetch:
        slow = _run_check(idle_fetch_waits_out_check, broker_url, 20.0, "idle-fetch")
        _slow_fetch[broker_url] = slow is not False
        log.info("broker %s: a waiting fetch %s", broker_url,
                 "waits its whole time: Faust's worker waits TALKSTREAM_FETCH_MAX_WAIT_MS, not 1,500 ms"
                 if _slow_fetch[broker_url] else "is answered when data arrives")
    return _slow_fetch[broker_url]


def generation_zero(broker_url: str) -> bool:
    """Does a new consumer group's first generation get the number 0?"""
    if broker_url not in _generation_zero:
        async def check(bootstrap: str) -> bool:
            return await first_generation(bootstrap) == 0
        zero = _run_check(check, broker_url, 20.0, "first-generation")
        _generation_zero[broker_url] = zero is not False
        if _generation_zero[broker_url]:
            log.info("broker %s numbers a group's first generation 0: a worker leaves its group at 0 too",
                     broker_url)
    return _generation_zero[broker_url]
