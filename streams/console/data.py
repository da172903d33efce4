"""The console's answers: what its JSON API returns and the actions it takes.

The reads and actions are the CLI's own (``streams.operations``: status, flow
states, dead letters, redrive, links and decisions, all read from the broker), so
the console and ``talkstream status --json`` show the same numbers from any
worker. Added here: each flow's activity over the last 15 minutes
(``streams.flowstats``) and, on a link's page, its two records as the systems
hold them now, side by side per mapped property.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import orjson

from connectors.common.kafka import bootstrap_servers, read_all
from streams import controls, flowstats, operations
from streams.explain import explain_link, links_of
from streams.mapping import Mapping
from streams.settings import Settings

log = logging.getLogger("talkstream.console")

#: Reads one record from its system now: (system, entity, id) -> the record (None: not there).
RecordReader = Callable[[str, str, str], Awaitable[dict | None]]

#: Seconds a record read may take before the link page shows it as unavailable.
RECORD_TIMEOUT = 10.0


class NotFound(LookupError):
    pass


class Console:
    """The answers of one worker's console, read from the broker (and the systems, for records)."""

    def __init__(self, settings: Settings, mapping: Mapping, read_record: RecordReader | None = None) -> None:
        # the operations read the broker the workers use, as the CLI's do
        self.settings = settings.model_copy(update={"kafka_broker": settings.broker_url()})
        self.mapping = mapping
        self.read_record = read_record

    # ------------------------------------------------------------------ flows

    async def flows(self, now: float | None = None) -> dict[str, Any]:
        """``talkstream status --json``, with each flow's activity over the last 15 minutes."""
        now = time.time() if now is None else now
        status, samples = await asyncio.gather(operations.status(self.settings, self.mapping), self._samples())
        activity = flowstats.series(samples, [flow.id for flow in self.mapping.flows], now)
        for flow in self.mapping.flows:
            row = status["flows"].setdefault(flow.id, {})
            row["title"] = flow.title
            row["activity"] = activity[flow.id]
        status["at"] = now
        return status

    async def _samples(self) -> list[dict]:
        latest: dict[bytes, bytes] = {}
        for _p, _o, key, value in await read_all(bootstrap_servers(self.settings.broker_url()),
                                                 flowstats.STATS_TOPIC):
            if key is not None and value:
                latest[key] = value
        samples = []
        for value in latest.values():
            try:
                samples.append(orjson.loads(value))
            except orjson.JSONDecodeError:
                continue
        return samples

    async def set_flow(self, flow_id: str, action: str, who: str) -> dict[str, Any]:
        """Pause or resume a flow (``talkstream flows pause|resume``); logged with who asked."""
        if action not in ("pause", "resume"):
            raise NotFound(f"no action {action!r}: pause or resume")
        control = controls.pause(flow_id, "paused from the console") if action == "pause" else controls.resume(flow_id)
        try:
            await operations.set_flow_state(self.settings, self.mapping, control)
        except operations.OperationError as exc:
            raise NotFound(str(exc)) from None
        log.warning("console: %s flow %s (asked from %s): %s", action, flow_id, who, control.describe())
        return {"flow": flow_id, "state": control.state, "why": control.describe()}

    # ------------------------------------------------------------------ links

    async def links(self, system: str | None, record_id: str) -> list[dict[str, Any]]:
        """Every link a record (an id of either system, or a link key's id such as a SKU) belongs to:
        ``talkstream explain``'s content, its recent decisions, and both records now."""
        systems = [system] if system else ["customcrm", "businessnxt"]
        states = await operations.link_states(self.settings)
        found: dict[str, dict] = {}
        for name in systems:
            for link in links_of(states, name, record_id):
                found.setdefault(link["key"], link)
        links = [link for link in found.values() if link.get("flow") in {f.id for f in self.mapping.flows}]
        recent = await operations.decisions(self.settings, {link["key"] for link in links}) if links else {}
        out = []
        for link in sorted(links, key=lambda link: link["key"]):
            explained = explain_link(link, recent.get(link["key"], []))
            explained["title"] = self.mapping.flow(link["flow"]).title
            explained["records"] = await self._records(link)
            out.append(explained)
        return out

    async def _records(self, link: dict) -> dict[str, Any]:
        """Both records of a link as their systems hold them now, and each mapped property's field
        in each (``fields``: property -> {system: field})."""
        flow = self.mapping.flow(link["flow"])
        fields = {prop.source or prop.setting or prop.target: {"customcrm": prop.source, "businessnxt": prop.target}
                  for prop in flow.properties}
        out: dict[str, Any] = {"fields": fields, "customcrm": None, "businessnxt": None, "errors": {}}
        if self.read_record is None:
            return out
        for endpoint in (flow.source, flow.target):
            record_id = (link.get("ids") or {}).get(endpoint.system)
            if not record_id:
                continue
            try:
                out[endpoint.system] = await asyncio.wait_for(
                    self.read_record(endpoint.system, endpoint.entity, str(record_id)), RECORD_TIMEOUT)
            except Exception as exc:  # the page says so; the rest of it still shows
                out["errors"][endpoint.system] = f"could not read {endpoint.label} {record_id}: " \
                                                 f"{type(exc).__name__}: {exc}"[:300]
        return out

    # ------------------------------------------------------------------ dead letters

    async def deadletters(self) -> list[dict[str, Any]]:
        """Every dead letter not yet re-driven, newest first, without payloads."""
        entries = await operations.deadletters(self.settings)
        return [_listed(entry.model_dump(mode="json", by_alias=True)) for entry in reversed(entries)]

    async def deadletter(self, entry_id: str) -> dict[str, Any]:
        for entry in await operations.deadletters(self.settings):
            if entry.id == entry_id:
                return entry.model_dump(mode="json", by_alias=True)
        raise NotFound(f"no dead letter {entry_id!r} waits (it may have been re-driven)")

    async def redrive(self, who: str, entry_id: str | None = None, flow_id: str | None = None) -> dict[str, Any]:
        """Re-drive one dead letter (``entry_id``), or all of them (of ``flow_id``); logged."""
        entries = await operations.deadletters(self.settings)
        if entry_id is not None:
            entries = [entry for entry in entries if entry.id == entry_id]
            if not entries:
                raise NotFound(f"no dead letter {entry_id!r} waits (it may have been re-driven)")
        if flow_id:
            entries = [entry for entry in entries if entry.flow == flow_id]
        count = await operations.redrive(self.settings, entries)
        log.warning("console: re-drove %d dead letter(s) (asked from %s): %s", count, who,
                    ", ".join(f"{e.id} [{e.flow or e.stage}] {e.link_key or e.record_id or ''}" for e in entries)
                    or "none waited")
        return {"redriven": count, "ids": [entry.id for entry in entries]}


def _listed(entry: dict) -> dict:
    """A dead letter as the list shows it: everything but the payload."""
    entry = {k: v for k, v in entry.items() if k != "payload"}
    entry["record"] = entry.get("link_key") or entry.get("record_id")
    return entry


class SystemRecords:
    """Reads a record from its system with a worker's own clients (``streams.runtime.Runtime``)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime

    async def __call__(self, system: str, entity: str, record_id: str) -> dict | None:
        await asyncio.wait_for(self.runtime.ready.wait(), RECORD_TIMEOUT)
        if system == "customcrm":
            from connectors.common.errors import NotFoundError

            try:
                return await self.runtime.customcrm.get(entity, record_id)
            except NotFoundError:
                return None
        key: Any = int(record_id) if record_id.isdigit() and entity == "order" else record_id
        rows = await self.runtime.businessnxt.read_by_keys(entity, [key])
        return next(iter(rows.values()), None)
