"""The Faust app: one per process, configured from ``streams.settings``.

``make_app()`` builds an app with the start-up and safety settings that
talkstream needs (README, "Faust settings"); ``app`` is the
process's app, used by the CLI (``talkstream worker`` is Faust's worker).
Agents register on ``app`` when ``streams.topology`` is imported.
"""
from __future__ import annotations

import gc
import logging
import os
import time

import faust

from connectors.common import patches
from connectors.common.kafka import SINGLE_RECORD_BATCH_SIZE, set_replication_factor
from connectors.common.patches import embedded_broker
from streams.broker_check import batches_per_request, generation_zero, idle_fetch_waits_out, single_record_batches
from streams.settings import Settings, get_settings

log = logging.getLogger("talkstream")

patches.apply()
# per-request HTTP logs would drown the worker's own (and could carry URLs with ids)
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

#: False in a process that runs one of talkstream's own commands (``streams.cli`` sets it), which
#: never produces through Faust: its app then runs no broker check when it is configured.
PRODUCES_THROUGH_FAUST = True

#: When this process started (for the start-to-ready measurement).
PROCESS_STARTED = time.monotonic()

#: Faust settings tuned for a fast start on the embedded broker and safe
#: at-least-once processing; the reasons are in the README ("Faust settings").
FAST_START = dict(
    broker_session_timeout=6.0,
    broker_heartbeat_interval=1.0,
    broker_rebalance_timeout=10.0,
    broker_request_timeout=30.0,
    broker_max_poll_interval=300.0,
    table_standby_replicas=0,
    stream_wait_empty=True,
    consumer_auto_offset_reset="earliest",
    producer_acks=-1,
    producer_linger=0.0,
    processing_guarantee="at_least_once",
    table_cleanup_interval=30.0,
)


def make_app(settings: Settings | None = None, *, app_id: str | None = None, **overrides) -> faust.App:
    """A Faust app with talkstream's settings (``overrides`` win)."""
    settings = settings or get_settings()
    broker_url = settings.broker_url()
    conf = dict(FAST_START)
    conf.update(
        broker=broker_url,
        store=settings.store,
        topic_partitions=settings.partitions,
        datadir=os.path.join(settings.data_dir, "{conf.id}-data"),
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        broker_commit_interval=settings.commit_interval,
        topic_replication_factor=settings.replication_factor,  # the topics Faust creates: changelogs, leader
    )
    conf.update(overrides)
    set_replication_factor(settings.replication_factor)  # the topics talkstream creates itself
    # fewer collections of the young generations, and so far fewer full ones: a full collection
    # walks every object the worker holds (measured in an initial load of 21,000 records: 1,650
    # young and 14 full collections took 2.0 s of 22 s of CPU with Python's thresholds, 9 took 0.4 s)
    gc.set_threshold(*settings.gc_thresholds)
    os.makedirs(settings.data_dir, exist_ok=True)
    app = faust.App(app_id or settings.app_id, autodiscover=False, **conf)

    @app.on_configured.connect
    def _work_around_broker_defects(sender, conf, **kwargs) -> None:
        # Runs once, when the configuration is first needed (not for --help). Only a
        # worker produces through Faust: the CLI's commands (status, replay, ...) and
        # `talkstream run` itself probe nothing here (their producers decide on their own).
        if not PRODUCES_THROUGH_FAUST:
            return
        # No broker configured: a default local one; stay on the safe side without probing it.
        probe = settings.kafka_broker is not None
        single = single_record_batches(settings.single_record_batches if probe else "on", broker_url)
        # the embedded broker's workarounds, where its self-checks find its defects; the group
        # check joins a throw-away group (Apache Kafka may hold a first join 3 s), so it runs only
        # on a broker already found defective
        embedded_broker.apply(
            single_record_batches=single,
            batches_per_request=batches_per_request(broker_url) if single else 1,
            fetch_max_wait_ms=settings.fetch_max_wait_ms if not probe or idle_fetch_waits_out(broker_url) else None,
            leave_at_generation_zero=single and (not probe or generation_zero(broker_url)))
        if single:
            conf.producer_max_batch_size = SINGLE_RECORD_BATCH_SIZE

    @app.task
    async def _announce_ready() -> None:
        # app tasks start after table recovery completed: the worker is ready.
        log.info(
            "talkstream worker ready in %.2f s (broker %s, single-record batches %s)",
            time.monotonic() - PROCESS_STARTED,
            broker_url,
            "on" if app.conf.producer_max_batch_size == SINGLE_RECORD_BATCH_SIZE else "off",
        )

    return app


app = make_app()
