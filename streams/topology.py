"""The Faust topology: topics, tables, agents, timers and web views.

::

  <system>.<entity>.changes ──▶ route ──▶ talkstream.flow.events ──▶ link ──▶ talkstream.<system>.<entity>.commands
        ▲ pollers / webhook              (keyed by link key)   ▲  (links table)              │
        │                                                      └──── results ◀── sink ◀─────┘

- ``route`` (table ``routes``) gives every change event its flows and link keys
  (``streams.routing``) and re-keys it onto ``talkstream.flow.events``; changes,
  results and ticks travel there as one batch per partition (``streams.flowmessages``).
- ``link`` (table ``links``, ``concurrency=1``) owns each link: it runs the pure
  decisions of ``streams.engine`` and sends their commands and dead letters.
- one ``sink`` agent per command topic writes batches through the connector's
  writer and sends each result back to ``talkstream.flow.events``.
- a timer sends ``tick`` messages to links that asked to be woken (parked
  orders, retries, lost results); the pollers run as leader-only timers (and once as soon
  as the leader is connected), a page of orders waiting for the products it names
  (``streams.pacing``).

Everything is derived from the mapping: a new flow or property needs no new agent.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import orjson
from faust.web import Request, Response, View

from connectors.common.patches import faust_fixes
from connectors.common.deadletters import DeadLetters
from connectors.common.kafka import bootstrap_servers, durability_configs
from schemas.change import ChangeEvent
from schemas.command import WriteCommand, WriteResult, command_members, command_topic, encode_command_batch
from schemas.deadletter import DEADLETTER_TOPIC, DeadLetter
from schemas.decision import DECISIONS_TOPIC
from streams import controls as flowcontrols, engine, flowmessages, flowstats, linkcodec, metrics
from streams.app import app
from streams.console import views as console_views
from streams.console.data import Console, SystemRecords
from streams.controlfollower import FlowControls
from streams.decisions import decision_of
from streams.linkkeys import flow_of
from streams.mapping import load_mapping
from streams.pacing import ReferencePacer
from streams.refs import REFS_TOPIC, SharedRefs
from streams.routing import known_routes, route, route_key, stored_routes
from streams.runtime import Runtime
from streams.settings import get_settings
from streams.topics import FLOW_EVENTS, change_topics as change_topic_names, entities
from streams.wakeups import WakeSchedule

log = logging.getLogger("talkstream.flow")

settings = get_settings()
mapping = load_mapping(settings.mapping_file)
PARTITIONS = settings.partitions
ENTITIES = entities(mapping)


def _raw_topic(*names: str, **kw):
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                     partitions=PARTITIONS, **kw)


change_topics = _raw_topic(*change_topic_names(mapping))
flow_events = _raw_topic(FLOW_EVENTS)
deadletter_topic = _raw_topic(DEADLETTER_TOPIC)
decisions_topic = _raw_topic(DECISIONS_TOPIC)
stats_topic = app.topic(flowstats.STATS_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw", partitions=1)
command_topics = {pair: _raw_topic(command_topic(*pair)) for pair in ENTITIES}

#: Each link as compact JSON bytes (``streams.linkcodec``): far less memory than the dict, and no
#: Faust JSON encoding per write.
#: The changelogs' min.insync.replicas (Faust gives them ``topic_replication_factor`` replicas).
_CHANGELOG_CONFIGS = durability_configs(settings.replication_factor)
links = app.Table("links", default=None, partitions=PARTITIONS, value_type=bytes,  # bytes: the "raw" codec
                  extra_topic_configs=_CHANGELOG_CONFIGS)
routes = app.Table("routes", default=None, partitions=PARTITIONS, extra_topic_configs=_CHANGELOG_CONFIGS)
refs_topic = _raw_topic(REFS_TOPIC)
product_refs = SharedRefs(bootstrap_servers(settings.broker_url()))
app.service(product_refs)
controls_topic = app.topic(flowcontrols.CONTROLS_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw",
                           value_serializer="raw", partitions=1)


def _single_record_batches() -> bool:
    from connectors.common.kafka import SINGLE_RECORD_BATCH_SIZE

    return app.conf.producer_max_batch_size == SINGLE_RECORD_BATCH_SIZE


class TableRefs:
    """Product references across links (Customcrm product Id <-> productNo), from ``streams.refs``."""

    def to_target(self, source_id: str) -> str | None:
        return product_refs.get(f"c:{source_id}")

    def to_source(self, target_id: str) -> str | None:
        return product_refs.get(f"b:{target_id}")


REFS = TableRefs()
pacer = ReferencePacer(mapping, linked=lambda product: REFS.to_target(product) is not None,
                       links_made=lambda: len(product_refs), bound=settings.reference_wait)
runtime = Runtime(settings, ENTITIES, single_record_batches=_single_record_batches, pacer=pacer)
app.service(runtime)

#: This worker's change events and sync latencies per flow since its last sample (``streams.flowstats``).
flow_counts = flowstats.FlowCounts()
WORKER_NAME = f"{socket.gethostname()}-{os.getpid()}"

POLICY = engine.Policy(park_timeout=settings.park_timeout, write_retry_max=settings.write_retry_max,
                       ack_timeout=settings.ack_timeout, settings=settings)


# --------------------------------------------------------------------------- flow controls
#
# ``streams.controls``: a flow that is paused or tripped sends no write; its links remember
# that they held one back (``held``), and get a tick when the flow runs again.

breaker = flowcontrols.Breaker(settings.breaker_max_writes, settings.breaker_window)
#: flow -> this worker's links that held a write back while the flow was held
held_links: dict[str, set[str]] = {}
#: flows that run again: the wake-up timer ticks their held links
resumed: set[str] = set()


def _on_control(control: flowcontrols.FlowControl) -> None:
    POLICY.held_flows = flow_controls.held()
    metrics.FLOW_PAUSED.labels(control.flow).set(int(control.state == flowcontrols.PAUSED))
    metrics.FLOW_TRIPPED.labels(control.flow).set(int(control.state == flowcontrols.TRIPPED))
    if control.state == flowcontrols.RUNNING:
        breaker.reset(control.flow)  # resume restarts the window
        resumed.add(control.flow)


flow_controls = FlowControls(bootstrap_servers(settings.broker_url()), on_change=_on_control)
app.service(flow_controls)


async def _trip(flow_id: str, system: str) -> None:
    """The breaker trips a flow: held here at once, on every worker once they read it."""
    control = flowcontrols.tripped(flow_id, system, breaker.count(flow_id, system, time.monotonic()) + 1,
                                   breaker.max_writes, breaker.window)
    if flow_controls.set(control):
        log.error("flow %s tripped: %s; `talkstream flows resume %s` resumes it", flow_id, control.describe(),
                  flow_id)
        await controls_topic.send(key=flow_id.encode(), value=control.to_bytes())


# --------------------------------------------------------------------------- link state
#
# Derived in memory from the links table, never written to a topic of their own
# (that would cost changelog messages on every write): when each local link
# needs a tick, and a one-line summary per link for /status. Both are rebuilt
# from the table after every recovery (start-up, rebalance).

schedule = WakeSchedule(POLICY)
summaries: dict[str, tuple[str, str, bool, bool]] = {}  # key -> (flow, status, parked, blocked), source-side links
summary_counts: Counter[tuple[str, str, bool, bool]] = Counter()  # summary -> its links: /status without a walk


#: The preset dictionary of the links held shrunk in memory (``linkcodec.shrink``).
LINK_DICTIONARY = linkcodec.mapping_dictionary(mapping)
#: Seconds between two looks for settled links to shrink.
SHRINK_INTERVAL = 10.0


def get_link(key: str) -> dict | None:
    raw = links.get(key)
    return linkcodec.unpack(key, linkcodec.expand(raw, LINK_DICTIONARY)) if raw else None


#: Links stored in the table but not yet on its changelog: link key -> (changelog partition, link).
unwritten: dict[str, tuple[int, bytes]] = {}
#: Links stored since the last look for settled links (``shrink_settled_links``).
touched: set[str] = set()


def store_of(table):
    """A table's store, used through its mapping interface only (``StoreT``; ``Collection.data`` is
    Faust's public handle on it): the same calls for the memory and the RocksDB store."""
    return table.data


def put_link(key: str, link: dict) -> None:
    """Store a link; an unchanged one (e.g. our own write read back) costs no changelog message.

    A provisional state (a write in flight, an order parked: ``engine.provisional``) goes to
    the changelog only at the next flush of the producer, which Faust does before it commits
    offsets, gives partitions away or stops (``write_unwritten``). The write's result usually
    comes first, and then only the state after it is written: a create costs one changelog
    message instead of two. Until the commit, the message that made the provisional state is
    not committed either: a worker that dies before it is read again from there, as for any
    other state, and the sinks' creates and updates are idempotent (origin stamp, match key,
    compare before write). (A RocksDB store keeps the provisional state on disk; after a
    ``kill -9`` the message read again finds it, and a write with no result is sent again
    after ``TALKSTREAM_ACK_TIMEOUT``.)"""
    raw = linkcodec.pack(link)
    held = links.get(key)
    if held is None or linkcodec.expand(held, LINK_DICTIONARY) != raw:
        touched.add(key)
        if engine.provisional(link):
            # the store alone (no changelog message): its partition is the current event's, as for
            # a table write
            store_of(links)[key] = raw
            unwritten[key] = (links.partition_for_key(key), raw)
        else:
            links[key] = raw
            unwritten.pop(key, None)
    _index(key, link)


def write_unwritten() -> None:
    """Send the provisional link states to the changelog (called at the start of every producer flush)."""
    while unwritten:
        key, (partition, raw) = unwritten.popitem()
        links.send_changelog(partition, key, raw)


faust_fixes.before_producer_flush(write_unwritten)


_SUMMARIES: dict[tuple, tuple] = {}  # the few distinct summaries, shared by every link that has one


def _index(key: str, link: dict) -> None:
    schedule.set(key, engine.wake_plan(link, POLICY))
    if link.get("held"):
        held_links.setdefault(link["flow"], set()).add(key)
    elif held_links:
        held = held_links.get(link["flow"])
        if held:
            held.discard(key)
    if link["ids"].get(engine.SOURCE) and link["status"] != engine.MOVED:
        summary = (link["flow"], link["status"], bool(link.get("park")), bool(link.get("blocked")))
        summary = _SUMMARIES.setdefault(summary, summary)
        old = summaries.get(key)
        if old is not summary:
            if old is not None:
                summary_counts[old] -= 1
            summary_counts[summary] += 1
            summaries[key] = summary
    elif key in summaries:  # a Business NXT record's own link that moved (create_in_source)
        summary_counts[summaries.pop(key)] -= 1


def _partition_of(key: str) -> int:
    """The flow-topic partition of a link key."""
    return flowmessages.partition_of(key, PARTITIONS)


@links.on_recover
async def _rebuild_link_index() -> None:
    """After every rebalance: index the links of the partitions this worker owns now (the
    in-memory store keeps links it wrote on partitions that moved to another worker)."""
    global _refs_seen
    owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == FLOW_EVENTS}
    _refs_seen = -2  # the next check looks at every parked order (fresh references may have been taken)
    for key in [key for key, (partition, _) in unwritten.items() if partition not in owned]:
        del unwritten[key]  # its partition moved: the new owner reads its messages again from the commit
    _share_link_keys()
    schedule.clear()
    summaries.clear()
    summary_counts.clear()
    held_links.clear()
    for key, raw in list(links.items()):
        if raw and _partition_of(key) in owned:
            _index(key, linkcodec.unpack(key, linkcodec.expand(raw, LINK_DICTIONARY)))
    touched.clear()
    shrink_settled()  # every link just read from the changelog has settled
    resumed.update(held_links)  # links that held a write back: a tick (held again if their flow still is)
    POLICY.recovered_at = time.time()  # create_in_source's grace counts from here too


#: The memory store holds settled links shrunk and one string per link key (below); a RocksDB
#: store keeps its values on disk (compressed in blocks), so neither applies there.
HELD_IN_MEMORY = settings.store.startswith("memory")


def shrink_settled() -> None:
    """Hold the links not stored since the last look shrunk in memory (``linkcodec.shrink``;
    the changelog keeps their JSON). Memory store only, through the store's mapping interface."""
    if HELD_IN_MEMORY:
        store = store_of(links)
        for key, raw in list(store.items()):
            if raw and raw[:1] != linkcodec.SHRUNK and key not in touched and key not in unwritten:
                store[key] = linkcodec.shrink(raw, LINK_DICTIONARY)
    touched.clear()


@app.timer(interval=SHRINK_INTERVAL)
async def shrink_settled_links() -> None:
    """Every ``SHRINK_INTERVAL``: shrink the links that were not stored since the last time."""
    shrink_settled()


def _share_link_keys() -> None:
    """One string object per link key after a recovery, as while processing: the links table's
    key, the routes that name it, its summary and wake-up (each read from a changelog was a
    string of its own: 75 bytes per key and route). Memory store only, through the stores'
    mapping interface."""
    if not HELD_IN_MEMORY:
        return
    store = store_of(links)
    for key in [key for key in store.keys() if sys.intern(key) is not key]:
        store[sys.intern(key)] = store.pop(key)
    stored = store_of(routes)
    for rkey, value in list(stored.items()):
        if isinstance(value, str):
            stored[rkey] = sys.intern(value)
        elif isinstance(value, list):
            stored[rkey] = [sys.intern(key) for key in value]


#: The agents' dead letters, through Faust's producer (flushed before their offsets are committed).
_dead_letters = DeadLetters(lambda key, value: deadletter_topic.send(key=key, value=value),
                            counted=metrics.count_dead_letter)
_dead_letter = _dead_letters.publish


async def send_batched(messages: list[tuple[str, dict]]) -> None:
    """Many links' messages (changes, results, ticks): one ``batch`` flow message per partition
    (``streams.flowmessages``)."""
    for key, value in flowmessages.batches(messages, _partition_of):
        metrics.child(metrics.EVENTS_OUT, FLOW_EVENTS).inc()
        await flow_events.send(key=key, value=value)


# --------------------------------------------------------------------------- route


#: Change events routed together, and the longest the route waits to fill a batch (the hop's
#: added latency when changes trickle in).
ROUTE_BATCH = flowmessages.BATCH_MEMBERS
ROUTE_BATCH_WAIT = 0.05


@app.agent(change_topics, name="route", concurrency=1)
async def route_changes(stream):
    """Give each change event its flows and link keys; re-key it onto the flow topic, the
    events of many links in one message per partition. Faust acknowledges a batch's events
    only after this loop's body sent it."""
    async for events in stream.take_events(ROUTE_BATCH, within=ROUTE_BATCH_WAIT):
        routed: list[tuple[str, dict]] = []
        for event in events:
            routed.extend(await _route(event))
        await send_batched(routed)


async def _route(event) -> list[tuple[str, dict]]:
    """The flow messages of one change event (none for a dead letter); remembers its link keys."""
    topic = event.message.topic
    metrics.child(metrics.EVENTS_IN, topic).inc()
    try:
        change = ChangeEvent.from_bytes(event.value)
    except Exception as exc:  # unparseable or schema-invalid payload: dead letter, keep going
        await _dead_letter(DeadLetter(
            stage="flow", reason=f"unparseable change event on {topic} at offset {event.message.offset}: {exc}",
            error_type="invalid_event", record_id=(event.key or b"").decode(errors="replace") or None,
            payload=event.value.decode(errors="replace")[:10000] if event.value else None))
        return []
    rkey = route_key(change)
    # the routes table's partition (its changelog's, a RocksDB store's database) is this event's
    faust_fixes.set_current_event(event)
    pairs, remembered = route(mapping, change, known_routes(routes.get(rkey)))
    if remembered is not None:
        # the link keys as the links table holds them (interned there): one string, not two
        routes[rkey] = stored_routes({flow_id: sys.intern(key) for flow_id, key in remembered.items()})
    # the event as it came (valid: it was just parsed), not dumped again
    return [(link_key, {"kind": "change", "flow": flow.id, "event": orjson.Fragment(event.value)})
            for flow, link_key in pairs]


# --------------------------------------------------------------------------- link


@app.agent(flow_events, name="link", concurrency=1)
async def link_agent(stream):
    """Own each link: decide, record the state, send the commands (one partition per link)."""
    await flow_controls.loaded.wait()  # a paused flow must not write while its state is read
    POLICY.held_flows = flow_controls.held()
    async for event in stream.events():
        key = event.key.decode()
        metrics.child(metrics.EVENTS_IN, FLOW_EVENTS).inc()
        try:
            members = flowmessages.unpack(event.key, event.value)
        except Exception as exc:
            await _dead_letter(DeadLetter(stage="flow", link_key=key, reason=f"unreadable flow message: {exc}",
                                          error_type="invalid_event",
                                          payload=event.value.decode(errors="replace")[:10000]))
            continue
        batched = len(members) != 1 or members[0][0] != key
        commands: list[WriteCommand] = []
        for link_key, member in members:
            if batched and _partition_of(link_key) != event.message.partition:
                # its link lives on another partition: processing it here would split its state
                await _dead_letter(DeadLetter(
                    stage="flow", link_key=link_key, error_type="invalid_event", payload=member,
                    reason=f"batch member on partition {event.message.partition}, its link is on "
                           f"{_partition_of(link_key)} (do all workers have the same TALKSTREAM_PARTITIONS?)"))
                continue
            # one string object per link key, shared by the links table, summaries and wake-ups
            await _handle_flow_message(sys.intern(link_key), member, commands)
        await _send_commands(commands)


async def _send_commands(commands: list[WriteCommand]) -> None:
    """The commands of one flow message, after its links were stored: one message per command
    topic and partition (``schemas.command``), members in order. (A flow message's links are
    all on one partition, and the command topics have as many.)"""
    for chunk in flowmessages.chunks_by(commands, lambda c: (c.system, c.entity, _partition_of(c.link_key))):
        topic = command_topics[(chunk[0].system, chunk[0].entity)]
        metrics.child(metrics.EVENTS_OUT, topic.get_topic_name()).inc()
        await topic.send(key=chunk[0].link_key.encode(),
                         value=encode_command_batch(chunk) if len(chunk) > 1 else chunk[0].to_bytes())


async def _handle_flow_message(key: str, message: dict, commands: list[WriteCommand]) -> None:
    """One message of one link: run the decision, store the link, send its dead letters and
    product references; its commands are added to ``commands`` (the caller sends them)."""
    try:
        flow = mapping.flow(message["flow"])
        kind = message["kind"]
    except Exception as exc:
        await _dead_letter(DeadLetter(stage="flow", link_key=key, reason=f"unreadable flow message: {exc!r}",
                                      error_type="invalid_event", payload=message))
        return
    now = time.time()
    state = get_link(key)
    if kind == "change":
        flow_counts.event(flow.id)

    def decide(state: dict | None) -> engine.Outcome:
        if kind == "change":
            return engine.handle_change(state, flow, change, key, now=now, refs=REFS, policy=POLICY)
        if kind == "result":
            return engine.handle_result(state, flow, result, now=now, refs=REFS, policy=POLICY)
        if kind == "redrive":
            return engine.redrive(state, flow, now=now, refs=REFS, policy=POLICY)
        return engine.handle_tick(state, flow, now=now, refs=REFS, policy=POLICY)

    try:
        change = ChangeEvent.model_validate(message["event"]) if kind == "change" else None
        result = WriteResult.model_validate(message["result"]) if kind == "result" else None
        sent = (state or {}).get("inflight", {}).get(result.command_id) if result else None
        outcome = decide(state)
        counted = flowcontrols.counted_writes(outcome.commands) if not message.get("resume") else None
        if counted:
            clock = time.monotonic()
            over = breaker.admits(flow.id, counted, clock)
            if over is None:
                breaker.note(flow.id, counted, clock)
            else:  # this decision would pass the limit: the flow trips, and it is decided again, held
                await _trip(flow.id, over)
                outcome = decide(get_link(key))
        if result:
            _observe_result(flow.id, sent, result, now)
    except Exception as exc:  # a bug must not stop every other link: dead-letter and go on
        log.exception("link %s: %s message failed", key, kind)
        await _dead_letter(DeadLetter(stage="flow", flow=flow.id, link_key=key, error_type="internal_error",
                                      reason=f"{kind} message could not be processed: {exc!r}",
                                      payload=message))
        return
    if kind in ("tick", "redrive") and state is None:
        return
    put_link(key, outcome.link)
    record = (decision_of(key, flow.id, kind, outcome, now=now, change=change, result=result)
              if settings.decision_log else None)
    if record is not None:
        await decisions_topic.send(key=key.encode(), value=record)
    for source_id, target_id in outcome.refs:
        if product_refs.put(source_id, target_id):  # one message per new reference
            await refs_topic.send(key=f"c:{source_id}".encode(), value=target_id.encode())
    metrics.record_actions(flow.id, outcome.actions)
    for action in outcome.actions:
        if action.startswith("warn:"):
            log.warning("link %s: %s", key, action[5:])
    commands.extend(outcome.commands)
    for entry in outcome.deadletters:
        await _dead_letter(entry)


def _observe_result(flow_id: str, sent: dict | None, result: WriteResult, now: float) -> None:
    metrics.child(metrics.WRITES, result.system, result.op, result.status).inc()
    if result.status == "ok":
        if sent and sent.get("src_t"):
            metrics.child(metrics.SYNC_LATENCY, flow_id).observe(max(0.0, now - sent["src_t"]))
            flow_counts.synced(flow_id, max(0.0, now - sent["src_t"]))


# --------------------------------------------------------------------------- sinks


#: Writes (of ``TALKSTREAM_SINK_BATCH_SIZE`` records) a sink hands its writer at once. The
#: writer runs their creates side by side, and Business NXT's request line carries calls that
#: wait together in one HTTP request: under its 600 requests/minute, four writes' look-ups
#: and creates cost about what one write's did.
SINK_WRITES_TOGETHER = 4


def _make_sink(system: str, entity: str):
    topic = command_topics[(system, entity)]

    async def sink(stream):
        per_apply = settings.sink_batch_size * SINK_WRITES_TOGETHER
        async for values in stream.take(per_apply, within=settings.sink_batch_wait):
            commands: list[WriteCommand] = []
            for raw in values:
                try:
                    members = command_members(raw)
                except Exception as exc:
                    await _dead_letter(DeadLetter(stage="sink", system=system, entity=entity,
                                                  reason=f"unreadable command message: {exc}",
                                                  error_type="invalid_command",
                                                  payload=raw.decode(errors="replace")[:10000]))
                    continue
                for member in members:
                    try:
                        commands.append(WriteCommand.model_validate(member))
                    except Exception as exc:
                        await _dead_letter(DeadLetter(stage="sink", system=system, entity=entity,
                                                      reason=f"unreadable write command: {exc}",
                                                      error_type="invalid_command", payload=member))
            metrics.child(metrics.EVENTS_IN, topic.get_topic_name()).inc(len(commands))
            for start in range(0, len(commands), per_apply):  # command batches: more than one apply
                chunk = commands[start:start + per_apply]
                await runtime.ready.wait()
                started = time.monotonic()
                results = await runtime.writers[system].apply(chunk)
                metrics.child(metrics.API_LATENCY, system, entity).observe(time.monotonic() - started)
                await send_batched([(result.link_key, {"kind": "result", "flow": result.flow,
                                                       "result": orjson.Fragment(result.to_bytes())})
                                    for result in results])

    sink.__name__ = f"sink_{system}_{entity}"
    return app.agent(topic, name=f"sink-{system}-{entity}", concurrency=1)(sink)


sinks = {pair: _make_sink(*pair) for pair in ENTITIES}


# --------------------------------------------------------------------------- timers


_refs_seen = -2  # product references counted at the last check (-2: look at every parked order next)
_refs_checked_at = 0.0


@app.timer(interval=0.25)
async def wake_links() -> None:
    """Send a tick to every local link whose wake-up time has come."""
    global _refs_seen, _refs_checked_at
    now = time.time()
    # parked orders are checked against the product references only when new ones came in
    # (at most twice a second; each product looked up once per check)
    linked = fresh = None
    refs_count = len(product_refs)
    if refs_count != _refs_seen and now - _refs_checked_at >= 0.5:
        refs_seen_before, _refs_seen, _refs_checked_at = _refs_seen, refs_count, now
        fresh = product_refs.take_fresh()  # only the orders waiting for one of these are looked at
        if refs_seen_before == -2:
            fresh = None  # after a recovery: every parked order
        known: dict[str, bool] = {}

        def linked(product: str) -> bool:
            if product not in known:
                known[product] = REFS.to_target(product) is not None
            return known[product]
    ticks = [(key, {"kind": "tick", "flow": flow_of(key)}) for key in schedule.due(now, linked, fresh)]
    for flow_id in [flow_id for flow_id in resumed if flow_id not in POLICY.held_flows]:
        resumed.discard(flow_id)
        # one tick each: the write with the latest agreed values; the operator who resumed the
        # flow let these through, so the breaker does not count them (its window starts afresh)
        ticks += [(key, {"kind": "tick", "flow": flow_id, "resume": True}) for key in held_links.pop(flow_id, ())]
    await send_batched(ticks)


def _make_poll_timer(system: str, entity: str) -> Callable[[], Awaitable[None]]:
    """One poller's poll, registered as its leader-only timer; returned for ``first_polls``."""
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
    app.timer(interval=settings.poll_interval, on_leader=True, name=f"poll-{system}-{entity}")(poll)
    return poll


#: Each poller's poll, as its timer and the first poll at start-up call it.
polls = {pair: _make_poll_timer(*pair) for pair in ENTITIES}


@app.task
async def first_polls() -> None:
    """The leader polls every system once as soon as it is connected: a timer's first tick
    comes one poll interval after the worker started."""
    await runtime.ready.wait()
    if app.is_leader():
        await asyncio.gather(*(poll() for poll in polls.values()))


@app.timer(interval=settings.poll_interval, on_leader=True, name="watch-watermarks")
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


@app.timer(interval=flowstats.STEP)
async def publish_flow_counts() -> None:
    """Every ``flowstats.STEP``: what this worker counted per flow, for the console's charts."""
    sample = flow_counts.take(WORKER_NAME, time.time())
    if sample is not None:
        await stats_topic.send(key=sample[0], value=sample[1])


# --------------------------------------------------------------------------- web


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


def local_status() -> dict:
    """What this worker holds and has done (its partitions only)."""
    flows: dict[str, dict[str, int]] = {f.id: {"links": 0, "linked": 0, "pending": 0, "parked": 0, "blocked": 0,
                                               "deleted": 0} for f in mapping.flows}
    # target-only records are not links; counted as they are stored, not walked per request
    for (flow_id, status, parked, blocked), n in list(summary_counts.items()):
        row = flows.setdefault(flow_id, {"links": 0, "linked": 0, "pending": 0, "parked": 0, "blocked": 0,
                                         "deleted": 0})
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
        for name in ("linked", "pending", "parked", "blocked", "deleted"):
            metrics.LINKS.labels(fid, name).set(row[name])
    return {
        "flows": flows,
        "events_in": sum(s.value for m in metrics.EVENTS_IN.collect() for s in m.samples
                         if s.name.endswith("_total")),
        "deadletters": sum(s.value for m in metrics.DEADLETTERS.collect() for s in m.samples
                           if s.name.endswith("_total")),
        "last_poll": {f"{s.labels['system']}.{s.labels['entity']}": s.value
                      for m in metrics.LAST_POLL.collect() for s in m.samples},
        "controls": {fid: {"state": flow_controls.state(fid).state, "why": flow_controls.state(fid).describe()}
                     for fid in flows},
        "ready": runtime.ready.is_set(),
        "pollers": len(runtime.pollers) if app.is_leader() else 0,  # the leader polls
    }


def state_memory() -> dict:
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
    held = {name: dict(table.items()) if HELD_IN_MEMORY else {} for name, table in (("links", links),
                                                                                  ("routes", routes))}
    parts = {
        "links": size(held["links"]),
        "routes": size(held["routes"]),
        "summaries": size(summaries),
        "wakeups": sum(size(part) for part in schedule.held()),
        "product_refs": size(product_refs.data),
    }
    return {"bytes": sum(parts.values()), "parts": parts, "links": len(summaries),
            "table_entries": len(links), "store": settings.store, "rss_trimmed_bytes": _trimmed_rss()}


def _trimmed_rss() -> int | None:
    """This process's RSS after a garbage collection and glibc's ``malloc_trim``: the memory its
    live objects hold, without the heap's free pages kept from earlier peaks (None where there is
    no ``/proc`` or glibc)."""
    import ctypes
    import gc
    import os

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, AttributeError, ValueError):
        return None


@app.page("/status")
async def status_view(web: View, request: Request) -> Response:
    """This worker's status; ``?memory=1`` adds what its link state takes in memory (a walk over it),
    and the worker's RSS after it returned its free heap pages to the system."""
    status = local_status()
    if request.query.get("memory"):
        status["state_memory"] = state_memory()
    return web.json(status)


console_views.register(app, Console(settings, mapping, SystemRecords(runtime)),
                       settings.console_token.get_secret_value() if settings.console_token else None)


@app.page("/health")
async def health_view(web: View, request: Request) -> Response:
    return web.json({"status": "ok"})

