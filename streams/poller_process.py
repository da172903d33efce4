"""The pollers in a process of their own, next to the worker that leads the group.

A worker is one Python process: one core. Polling both systems and publishing
their change events took about a sixth of its CPU in an initial load, while
the machine's other core had room. With ``TALKSTREAM_POLLERS=process`` (the
default) the worker that leads the group starts this module as a child
process, ``python -m streams.poller_process``, and stops it when it loses the
lead or stops. The child dies with its parent (``PR_SET_PDEATHSIG``), after a
``kill -9`` too, so a new leader never polls next to an orphan. With
``TALKSTREAM_POLLERS=worker`` the leader's own timers poll instead, as before.

The child runs what the leader's timers run: each system's pollers
(``streams.runtime``), paced by reference (``streams.pacing``, following the
product references itself), and the watch for watermarks written by
``talkstream resync``. It reports each poll and each dead letter on its stdout
as one JSON line; :class:`PollerProcess`, in the worker, turns them into the
worker's metrics (``/metrics``, ``/status``) and passes its log lines through.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from typing import Any, Callable

import orjson
from mode import Service

log = logging.getLogger("talkstream.pollers")

#: Environment of the child: the parent's pid (the child exits if it is not its parent any
#: more), single-record batches and batches per request as the worker decided them.
PARENT_PID, SINGLE_RECORD_BATCHES, BATCHES_PER_REQUEST, LOG_LEVEL = (
    "TALKSTREAM_POLLERS_PARENT", "TALKSTREAM_POLLERS_SINGLE_RECORD_BATCHES",
    "TALKSTREAM_POLLERS_BATCHES_PER_REQUEST", "TALKSTREAM_POLLERS_LOG_LEVEL")


# --------------------------------------------------------------------------- the worker's side


class PollerProcess(Service):
    """Starts, watches and stops the pollers' child process of a leading worker."""

    def __init__(self, *, on_report: Callable[[dict], None], child_env: Callable[[], dict[str, str]],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_report = on_report  # one JSON report line of the child
        self.child_env = child_env  # what the child needs to know of the worker's decisions
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def ensure(self) -> None:
        """Start the child if it does not run (first time, or it exited: it is started again)."""
        if self.running:
            return
        if self.process is not None:
            log.warning("the pollers' process exited with %s; starting it again", self.process.returncode)
        env = {**os.environ, **self.child_env(), PARENT_PID: str(os.getpid())}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streams.poller_process", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=None)  # its log lines go where ours go
        self._reader = asyncio.ensure_future(self._read(self.process))
        log.info("pollers: started their process (pid %s)", self.process.pid)

    async def halt(self) -> None:
        """Stop the child (this worker no longer leads, or it stops)."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
        log.info("pollers: stopped their process (pid %s)", process.pid)

    async def on_stop(self) -> None:
        await self.halt()

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            try:
                report = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(report, dict):
                self.on_report(report)


# --------------------------------------------------------------------------- the child


def _die_with_parent(parent: int) -> None:
    """Get SIGTERM when the parent dies (Linux); exit now if it already has."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent check below still runs every poll
        pass
    if os.getppid() != parent:
        raise SystemExit(0)


def report(**fields: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(fields) + b"\n")
    sys.stdout.flush()


async def _poll_loop(runtime, pair: tuple[str, str], interval: float, parent: int) -> None:
    poller = runtime.pollers[pair]
    while os.getppid() == parent:
        try:
            await poller.poll_once()
        except Exception as exc:  # the next poll retries; never stop polling
            log.warning("poll %s %s failed: %s", *pair, exc)
        else:
            report(poll=list(pair), at=time.time())
        await asyncio.sleep(interval)
    log.warning("pollers: the worker that started them is gone; stopping")
    os.kill(os.getpid(), signal.SIGTERM)


async def _watch_watermarks(runtime, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await runtime.watermarks.changed_elsewhere()
        except Exception as exc:
            log.warning("watermark check failed: %s", exc)
            continue
        if changed:
            log.info("watermarks changed outside the pollers (resync): the pollers reload them")
            for poller in runtime.pollers.values():
                poller.invalidate()


async def run_child() -> None:
    from connectors.common import kafka_compat
    from connectors.common.kafka import bootstrap_servers
    from streams.mapping import load_mapping
    from streams.pacing import ReferencePacer
    from streams.refs import SharedRefs
    from streams.runtime import Runtime
    from streams.settings import get_settings
    from streams.topics import entities

    parent = int(os.environ.get(PARENT_PID) or os.getppid())
    _die_with_parent(parent)
    kafka_compat.apply_aiokafka()
    kafka_compat.set_batches_per_request(int(os.environ.get(BATCHES_PER_REQUEST) or 1))
    settings = get_settings()
    mapping = load_mapping(settings.mapping_file)
    refs = SharedRefs(bootstrap_servers(settings.broker_url()))
    pacer = ReferencePacer(mapping, linked=lambda product: refs.get(f"c:{product}") is not None,
                           links_made=lambda: len(refs), bound=settings.reference_wait)
    single = os.environ.get(SINGLE_RECORD_BATCHES, "on") == "on"
    runtime = Runtime(settings, entities(mapping), single_record_batches=lambda: single, pacer=pacer)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await refs.start()
    await runtime.start()
    deadletters = runtime.deadletters
    publish = deadletters.publish

    async def publish_and_report(entry) -> None:
        await publish(entry)
        report(deadletter=entry.stage)
    deadletters.publish = publish_and_report  # the pollers hold this publisher
    tasks = [asyncio.ensure_future(_poll_loop(runtime, pair, settings.poll_interval, parent))
             for pair in runtime.pollers]
    tasks.append(asyncio.ensure_future(_watch_watermarks(runtime, settings.poll_interval)))
    log.info("pollers: running (%d pollers, pid %s)", len(runtime.pollers), os.getpid())
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.stop()
        await refs.stop()


def main() -> None:
    logging.basicConfig(level=os.environ.get(LOG_LEVEL) or "INFO", stream=sys.stderr,
                        format="[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s")
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(run_child())


if __name__ == "__main__":
    main()
