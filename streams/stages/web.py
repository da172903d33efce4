"""The worker's web views: ``/metrics``, the Business NXT webhook, ``/status``, ``/health``, and the console.

``/status`` is this worker's own view (its partitions only); ``talkstream status``
and the console (``streams.console``) show the whole system's, read from Kafka.
"""
from __future__ import annotations

import ctypes
import gc
import os
import sys

from faust.web import Request, Response, View

from streams import engine, metrics
from streams.console import views as console_views
from streams.console.data import Console, SystemRecords
from streams.stages.context import Context
from streams.stages.link import LinkStage

_COLUMNS = ("linked", "pending", "parked", "blocked", "deleted")


def register(context: Context, link: LinkStage) -> None:
    """Add the web views to the context's app."""
    app, runtime, settings = context.app, context.runtime, context.settings

    @app.page("/metrics")
    async def metrics_view(web: View, request: Request) -> Response:
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    @app.page("/webhooks/businessnxt")
    class BusinessnxtWebhook(View):
        async def post(self, request: Request) -> Response:
            await runtime.ready.wait()
            if runtime.webhook is None:
                return self.json({"error": "webhooks are off (TALKSTREAM_BUSINESSNXT_WEBHOOK_KEY is unset)"},
                                 status=404)
            body = await request.read()
            status, payload = await runtime.webhook.handle(body, request.headers.get("x-vwd-signature-v1"))
            return self.json(payload, status=status)

    @app.page("/status")
    async def status_view(web: View, request: Request) -> Response:
        """This worker's status; ``?memory=1`` adds what its link state takes in memory (a walk over it),
        and the worker's RSS after it returned its free heap pages to the system."""
        status = local_status(context, link)
        if request.query.get("memory"):
            status["state_memory"] = state_memory(context, link)
        return web.json(status)

    console_views.register(app, Console(settings, context.mapping, SystemRecords(runtime)),
                           settings.console_token.get_secret_value() if settings.console_token else None)

    @app.page("/health")
    async def health_view(web: View, request: Request) -> Response:
        return web.json({"status": "ok"})


def local_status(context: Context, link: LinkStage) -> dict:
    """What this worker holds and has done (its partitions only)."""
    flows: dict[str, dict[str, int]] = {f.id: {"links": 0, **dict.fromkeys(_COLUMNS, 0)}
                                        for f in context.mapping.flows}
    # target-only records are not links; counted as they are stored, not walked per request
    for (flow_id, status, parked, blocked), n in list(link.summary_counts.items()):
        row = flows.setdefault(flow_id, {"links": 0, **dict.fromkeys(_COLUMNS, 0)})
        row["links"] += n
        if status == engine.LINKED:
            row["linked"] += n
        elif status == engine.PENDING:
            row["pending"] += n
        elif status == engine.DELETED:
            row["deleted"] += n
        row["parked"] += n * parked
        row["blocked"] += n * blocked
    for fid, row in flows.items():
        for name in _COLUMNS:
            metrics.LINKS.labels(fid, name).set(row[name])
    controls = context.flow_controls
    return {
        "flows": flows,
        "events_in": sum(s.value for m in metrics.EVENTS_IN.collect() for s in m.samples
                         if s.name.endswith("_total")),
        "deadletters": sum(s.value for m in metrics.DEADLETTERS.collect() for s in m.samples
                           if s.name.endswith("_total")),
        "last_poll": {f"{s.labels['system']}.{s.labels['entity']}": s.value
                      for m in metrics.LAST_POLL.collect() for s in m.samples},
        "controls": {fid: {"state": controls.state(fid).state, "why": controls.state(fid).describe()}
                     for fid in flows},
        "ready": context.runtime.ready.is_set(),
        "pollers": len(context.runtime.pollers) if context.app.is_leader() else 0,  # the leader polls
    }


def state_memory(context: Context, link: LinkStage) -> dict:
    """What this worker's link state takes in memory: every object reachable from the links and
    routes tables, the per-link summaries and wake-ups and the product references, counted
    once each (``sys.getsizeof``, containers included). Interpreter and library memory,
    buffers, the allocator's free space and the intern table's slot for each link key
    (about 40 bytes) are not in it; compare the worker's RSS."""
    seen: set[int] = set()

    def size(obj) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        total = sys.getsizeof(obj)
        if isinstance(obj, dict):
            total += sum(size(k) + size(v) for k, v in obj.items())
        elif isinstance(obj, (list, tuple, set)):
            total += sum(size(item) for item in obj)
        elif hasattr(obj, "__slots__"):
            total += sum(size(getattr(obj, name, None)) for name in obj.__slots__)
        return total

    # each table as a dict of its entries (the memory store holds one); a RocksDB store's
    # entries are on disk and are not counted here (compare the worker's RSS)
    held = {name: dict(table.items()) if link.held_in_memory else {}
            for name, table in (("links", context.links), ("routes", context.routes))}
    parts = {
        "links": size(held["links"]),
        "routes": size(held["routes"]),
        "summaries": size(link.summaries),
        "wakeups": sum(size(part) for part in link.schedule.held()),
        "product_refs": size(context.product_refs.data),
    }
    return {"bytes": sum(parts.values()), "parts": parts, "links": len(link.summaries),
            "table_entries": len(context.links), "store": context.settings.store,
            "rss_trimmed_bytes": trimmed_rss()}


def trimmed_rss() -> int | None:
    """This process's RSS after a garbage collection and glibc's ``malloc_trim``: the memory its
    live objects hold, without the heap's free pages kept from earlier peaks (None where there is
    no ``/proc`` or glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, AttributeError, ValueError):
        return None
