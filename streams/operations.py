"""Operator actions over Kafka, used by the CLI: resync, replay, dead letters, status.

Each works against the broker directly (no running worker needed for the
reads), so it also works while workers run.
"""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from connectors.common.kafka import (bootstrap_servers, ensure_topics, make_producer, partitions, read_all,
                                     true_end_offsets)
from connectors.common.watermarks import WATERMARK_TOPIC, WatermarkStore, watermark_key
from schemas.change import ChangeEvent, change_topic
from schemas.deadletter import DEADLETTER_TOPIC, DeadLetter
from schemas.decision import DECISIONS_TOPIC
from streams import flowmessages
from streams.controls import CONTROLS_TOPIC, FlowControl
from streams.mapping import Mapping
from streams.settings import Settings
from streams.topics import FLOW_EVENTS, entities


class OperationError(RuntimeError):
    pass


def _bootstrap(settings: Settings) -> str:
    if not settings.kafka_broker:
        raise OperationError("KAFKA_BROKER is not set: point it at the broker the workers use")
    return bootstrap_servers(settings.kafka_broker)


async def _producer(settings: Settings):
    from streams.broker_check import single_record_batches

    producer = make_producer(_bootstrap(settings),
                             single_record_batches=single_record_batches(settings.single_record_batches,
                                                                         settings.broker_url()))
    await producer.start()
    return producer


# --------------------------------------------------------------------------- flow controls


async def flow_states(settings: Settings, mapping: Mapping) -> dict[str, FlowControl]:
    """Each flow's state as the controls topic holds it (running when it holds none)."""
    latest: dict[str, bytes | None] = {}
    for _p, _o, key, value in await read_all(_bootstrap(settings), CONTROLS_TOPIC):
        if key is not None:
            latest[key.decode()] = value
    states = {}
    for flow in mapping.flows:
        raw = latest.get(flow.id)
        try:
            states[flow.id] = FlowControl.from_bytes(raw) if raw else FlowControl(flow=flow.id)
        except ValueError:
            states[flow.id] = FlowControl(flow=flow.id)
    return states


async def set_flow_state(settings: Settings, mapping: Mapping, control: FlowControl) -> None:
    """Write a flow's new state (``talkstream flows pause|resume``); every worker obeys it within
    a second or two."""
    known = [flow.id for flow in mapping.flows]
    if control.flow not in known:
        raise OperationError(f"no flow {control.flow!r}; the flows are {', '.join(known)}")
    await ensure_topics(_bootstrap(settings), [CONTROLS_TOPIC], partitions=1, compact=[CONTROLS_TOPIC])
    producer = await _producer(settings)
    try:
        await (await producer.send(CONTROLS_TOPIC, control.to_bytes(), key=control.flow.encode()))
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- resync


async def resync(settings: Settings, mapping: Mapping, system: str, entity: str) -> str:
    """Reset one poller's watermark: its next poll re-reads every record of the source."""
    if (system, entity) not in entities(mapping):
        known = ", ".join(f"{s}/{e}" for s, e in entities(mapping))
        raise OperationError(f"no poller for {system}/{entity}; known: {known}")
    producer = await _producer(settings)
    try:
        key = watermark_key(system, entity)
        await WatermarkStore(_bootstrap(settings), producer).save(key, None)
        return key
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- replay


def _parse_since(since: str) -> float | None:
    if since == "earliest":
        return None
    try:
        dt = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError as exc:
        raise OperationError(f"--since must be 'earliest' or an ISO time, not {since!r}") from exc
    return dt.timestamp()


async def replay(settings: Settings, mapping: Mapping, flow_id: str, since: str = "earliest",
                 progress=None) -> int:
    """Re-feed a flow's latest change events (both sides) with origin ``replay``.

    Only the latest event per record is re-fed (the topic is compacted in
    production; here it is deduplicated while reading). Records observed
    before ``since`` are skipped. Returns the number of events re-fed.
    """
    try:
        flow = mapping.flow(flow_id)
    except KeyError:
        raise OperationError(f"unknown flow {flow_id!r}; flows: {', '.join(f.id for f in mapping.flows)}") from None
    cutoff = _parse_since(since)
    bootstrap = _bootstrap(settings)
    producer = await _producer(settings)
    sent = 0
    try:
        for system, entity in ((flow.source.system, flow.source.entity), (flow.target.system, flow.target.entity)):
            topic = change_topic(system, entity)
            latest: dict[bytes, bytes] = {}
            for _p, _o, key, value in await read_all(bootstrap, topic, timeout=300):
                if key is not None and value is not None:
                    latest[key] = value
            futures = []
            for key, value in latest.items():
                try:
                    event = ChangeEvent.from_bytes(value)
                except Exception:
                    continue  # the router dead-lettered it when it first came
                if cutoff is not None and event.observed_at.timestamp() < cutoff:
                    continue
                replayed = event.model_copy(update={"origin": "replay"})
                futures.append(await producer.send(topic, replayed.to_bytes(), key=key))
                sent += 1
                if progress:
                    progress(sent)
            for fut in futures:
                await fut
    finally:
        await producer.stop()
    return sent


# --------------------------------------------------------------------------- dead letters


async def deadletters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter on the topic, oldest first, without the ones already re-driven."""
    entries: list[DeadLetter] = []
    redriven: set[str] = set()
    for _p, _o, key, value in await read_all(_bootstrap(settings), DEADLETTER_TOPIC):
        if value is None:
            continue
        data = orjson.loads(value)
        if data.get("schema") == "talkstream.redriven/v1":
            redriven.update(data.get("ids", []))
            continue
        try:
            entries.append(DeadLetter.model_validate(data))
        except Exception:
            continue
    return [e for e in entries if e.id not in redriven]


async def redrive(settings: Settings, entries: list[DeadLetter]) -> int:
    """Re-drive dead letters: change events go back to their change topic, links get a redrive message.

    A marker on the dead-letter topic records which entries were re-driven.
    """
    producer = await _producer(settings)
    done: list[str] = []
    try:
        for entry in entries:
            payload: Any = entry.payload
            if entry.link_key and entry.flow:
                await (await producer.send(FLOW_EVENTS, flowmessages.encode("redrive", entry.flow),
                                           key=entry.link_key.encode()))
            if isinstance(payload, dict) and payload.get("schema") == "talkstream.change/v1":
                event = ChangeEvent.model_validate(payload).model_copy(update={"origin": "replay"})
                await (await producer.send(event.topic, event.to_bytes(), key=event.key))
            done.append(entry.id)
        if done:
            marker = orjson.dumps({"schema": "talkstream.redriven/v1", "ids": done, "at": time.time()})
            await (await producer.send(DEADLETTER_TOPIC, marker, key=b"redriven"))
    finally:
        await producer.stop()
    return len(done)


# --------------------------------------------------------------------------- status


async def link_states(settings: Settings) -> dict[str, bytes | None]:
    """The latest state of every link, as the ``links`` changelog holds it: link key -> stored
    bytes (``streams.linkcodec``; None: deleted). Faust writes the table's keys as JSON."""
    latest: dict[str, bytes | None] = {}
    changelog = f"{settings.app_id}-links-changelog"
    for _p, _o, key, value in await read_all(_bootstrap(settings), changelog, timeout=120):
        if key is not None:
            latest[orjson.loads(key)] = value
    return latest


async def decisions(settings: Settings, link_keys: set[str], last: int = 5) -> dict[str, list[dict]]:
    """The ``last`` decision records (``schemas.decision``) of each of ``link_keys``, oldest first."""
    found: dict[str, list[dict]] = {key: [] for key in link_keys}
    wanted = {key.encode(): key for key in link_keys}
    for _p, _o, key, value in await read_all(_bootstrap(settings), DECISIONS_TOPIC, timeout=120):
        if key in wanted and value:
            found[wanted[key]].append(orjson.loads(value))
    return {key: records[-last:] for key, records in found.items()}


async def status(settings: Settings, mapping: Mapping) -> dict[str, Any]:
    """Per flow: links by status, pending creates, parked, dead letters; last poll per
    poller (its watermark); consumer lag of the worker group."""
    bootstrap = _bootstrap(settings)
    latest = await link_states(settings)
    flows: dict[str, Counter] = {f.id: Counter() for f in mapping.flows}
    for value in latest.values():
        if not value:
            continue
        link = orjson.loads(value)
        if not (link.get("ids") or {}).get("customcrm") or link.get("status") == "moved":
            continue  # a target record no source record has (yet), or one whose link moved: not a link
        c = flows.setdefault(link.get("flow", "?"), Counter())
        c["links"] += 1
        c[link.get("status", "?")] += 1
        if link.get("park"):
            c["parked"] += 1
        if link.get("blocked"):
            c["blocked"] += 1
    for entry in await deadletters(settings):
        flows.setdefault(entry.flow or f"({entry.stage})", Counter())["deadletters"] += 1

    watermarks: dict[str, Any] = {}
    for _p, _o, key, value in await read_all(bootstrap, WATERMARK_TOPIC):
        if key is not None:
            watermarks[key.decode()] = orjson.loads(value) if value else None

    states = await flow_states(settings, mapping)
    lag = await consumer_lag(bootstrap, settings.app_id,
                             [change_topic(s, e) for s, e in entities(mapping)] + [FLOW_EVENTS])
    return {
        "flows": {fid: {"links": c["links"], "linked": c["linked"], "pending": c["pending-create"],
                        "new": c["new"], "deleted": c["deleted"], "parked": c["parked"],
                        "blocked": c["blocked"], "deadletters": c["deadletters"],
                        **({"state": states[fid].state, "why": states[fid].describe()} if fid in states else {})}
                  for fid, c in flows.items()},
        "pollers": {f"{s}.{e}": _poll_summary(s, watermarks.get(watermark_key(s, e)), settings.timezone)
                    for s, e in entities(mapping)},
        "lag": lag,
    }


def _poll_summary(system: str, mark: dict | None, tz: str) -> dict[str, Any]:
    """A poller's watermark as saved (every detail), the time of the last change it read (UTC,
    ISO) and that time's age in seconds; None times before its first poll."""
    when = watermark_time(system, mark, tz)
    now = time.time()
    return {"watermark": mark, "time": when.isoformat().replace("+00:00", "Z") if when else None,
            "age_s": round(now - when.timestamp(), 1) if when else None}


def watermark_time(system: str, mark: dict | None, tz: str) -> datetime | None:
    """The newest change time a poller's watermark (``connectors.common.poller.Watermark``) covers:
    the newest of its marks, in UTC (Business NXT's are server-local time, converted with ``tz``)."""
    from connectors.businessnxt.poller import FLOOR
    from connectors.businessnxt.timezones import local_to_utc, parse_utc
    from connectors.common.poller import Watermark

    marks = [value for value in Watermark.from_json(mark, stream="feed").marks.values() if value and value != FLOOR]
    try:
        if not marks:
            return None
        if system == "businessnxt":
            return max(local_to_utc(value, tz) for value in marks)
        return max(parse_utc(value) for value in marks)
    except (ValueError, TypeError):
        return None


async def consumer_lag(bootstrap: str, group: str, topics: list[str]) -> dict[str, int]:
    """Messages not yet committed by the worker group, per topic (committed() works on the embedded broker;
    the end offsets are read exactly there too, where the streams' topics carry multi-record batches)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [tp for topic in topics for tp in await partitions(consumer, topic)]
        ends = await true_end_offsets(bootstrap, tps)
        out: dict[str, int] = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            out[tp.topic] = out.get(tp.topic, 0) + max(0, ends[tp] - (committed or 0))
        return out
    finally:
        await consumer.stop()
