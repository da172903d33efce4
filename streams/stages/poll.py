"""The poll stage: each system's changes -> its change topics.

One leader-only timer per poller (``connectors/<system>/poller.py``: read since
the watermark, publish, save the watermark after the broker's ack), plus a first
poll as soon as the leader is connected, and a watch for watermarks that
``talkstream resync`` rewrote.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from streams import metrics
from streams.stages.context import Context

log = logging.getLogger("talkstream.flow")


def register(context: Context) -> dict[tuple[str, str], Callable[[], Awaitable[None]]]:
    """Add the poll timers to the context's app; returns each poller's poll."""
    app, runtime, interval = context.app, context.runtime, context.settings.poll_interval

    def make_poll(system: str, entity: str) -> Callable[[], Awaitable[None]]:
        running = asyncio.Lock()

        async def poll() -> None:
            if not runtime.ready.is_set() or running.locked():
                return  # not connected yet, or its first poll (``first_polls``) is still running
            poller = runtime.pollers.get((system, entity))
            if poller is None:
                return
            async with running:
                try:
                    await poller.poll_once()
                except Exception as exc:  # the next poll retries; never crash the worker
                    log.warning("poll %s %s failed: %s", system, entity, exc)
                    return
            metrics.POLLS.labels(system, entity).inc()
            metrics.LAST_POLL.labels(system, entity).set(time.time())

        poll.__name__ = f"poll_{system}_{entity}"
        app.timer(interval=interval, on_leader=True, name=f"poll-{system}-{entity}")(poll)
        return poll

    polls = {pair: make_poll(*pair) for pair in context.entities}

    @app.task
    async def first_polls() -> None:
        """The leader polls every system once as soon as it is connected: a timer's first tick
        comes one poll interval after the worker started."""
        await runtime.ready.wait()
        if app.is_leader():
            await asyncio.gather(*(poll() for poll in polls.values()))

    @app.timer(interval=interval, on_leader=True, name="watch-watermarks")
    async def watch_watermarks() -> None:
        """After ``talkstream resync`` wrote a watermark, every poller reloads its own."""
        if not runtime.ready.is_set():
            return
        try:
            changed = await runtime.watermarks.changed_elsewhere()
        except Exception as exc:
            log.warning("watermark check failed: %s", exc)
            return
        if changed:
            log.info("watermarks changed outside this worker (resync): pollers reload them")
            for poller in runtime.pollers.values():
                poller.invalidate()

    return polls
