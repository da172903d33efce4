"""Decides whether producers must send single-record batches.

The embedded broker (Tansu 0.6) reports a partition's end offset as the base
offset of the last record batch + 1. Faust reads a changelog only up to that
end offset when it recovers a table, so with multi-record batches a restarted
worker silently loses the last updates of its tables. With one record per
batch the end offsets are exact.

``single_record_batches(settings)``: ``on``/``off`` are taken as given;
``auto`` runs the start-up self-check (produce a few records in one batch,
compare the end offset with what was written) and turns the protection on
when the broker's offsets are wrong, or when the check cannot run.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from connectors.common.kafka import bootstrap_servers, end_offsets_are_exact

log = logging.getLogger(__name__)

_cache: dict[str, bool] = {}


def run_self_check(broker_url: str, timeout: float = 20.0) -> bool | None:
    """True: exact end offsets; False: wrong; None: the check could not run."""
    result: dict[str, bool | None] = {"exact": None}

    def target() -> None:
        try:
            result["exact"] = asyncio.run(
                asyncio.wait_for(end_offsets_are_exact(bootstrap_servers(broker_url)), timeout)
            )
        except Exception as exc:  # the broker may be down: decide safely
            log.warning("broker end-offset self-check could not run: %s", exc)

    # its own thread and event loop: callers may already be inside one
    t = threading.Thread(target=target, name="broker-self-check", daemon=True)
    t.start()
    t.join(timeout + 5)
    return result["exact"]


def single_record_batches(mode: str, broker_url: str) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    if broker_url not in _cache:
        exact = run_self_check(broker_url)
        if exact is False:
            log.warning(
                "broker %s reports wrong end offsets for multi-record batches: "
                "sending one record per batch (table recovery would lose updates otherwise)",
                broker_url,
            )
        elif exact is None:
            log.warning("broker self-check failed: sending one record per batch to be safe")
        _cache[broker_url] = exact is not True
    return _cache[broker_url]
