"""The link stage: each link's messages -> a decision -> its state, its writes and its decision record.

The ``link`` agent (``concurrency=1``, one partition per link) reads
``talkstream.flow.events``: changes from the route stage, results from the sinks,
ticks from the wake-up timer. For each it loads the link from the ``links`` table,
makes what entered canonical (``streams.canonical``: a change's record, a result's
record, a parked change again), runs the pure decision of ``streams.engine`` on
canonical values, stores the new state, and sends the
write commands (to ``talkstream.<system>.<entity>.commands``), the decision record
(``talkstream.decisions``), new product references and dead letters.

Derived in memory from the table, never written to a topic of their own: when each
local link needs a tick (``streams.wakeups``), a one-line summary per link for
``/status``, and the links that held a write back while their flow was paused or
tripped (``streams.controls``). All rebuilt after every recovery.
"""
from __future__ import annotations

import logging
import sys
import time
from collections import Counter

from connectors.common.patches import faust_fixes
from schemas.change import ChangeEvent
from schemas.command import WriteCommand, WriteResult, command_topic, encode_command_batch
from schemas.deadletter import DeadLetter
from streams import canonical, controls as flowcontrols, engine, flowmessages, flowstats, linkcodec, metrics
from streams.decisions import decision_of
from streams.linkkeys import flow_of
from streams.stages.context import Context
from streams.topics import FLOW_EVENTS
from streams.wakeups import WakeSchedule

log = logging.getLogger("talkstream.flow")

#: Seconds between two looks for settled links to shrink.
SHRINK_INTERVAL = 10.0


class LinkStage:
    """The links a worker owns, and what it derives from them."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.mapping, self.settings, self.policy = context.mapping, context.settings, context.policy
        self.links = context.links
        self.schedule = WakeSchedule(context.policy)
        #: key -> (flow, status, parked, blocked) of the source-side links, and how many links have each
        self.summaries: dict[str, tuple[str, str, bool, bool]] = {}
        self.summary_counts: Counter[tuple[str, str, bool, bool]] = Counter()
        self._distinct: dict[tuple, tuple] = {}  # the few distinct summaries, shared by every link
        #: flow -> this worker's links that held a write back while the flow was held
        self.held_links: dict[str, set[str]] = {}
        #: flows that run again: the wake-up timer ticks their held links
        self.resumed: set[str] = set()
        #: the preset dictionary of the links held shrunk in memory (``linkcodec.shrink``)
        self.dictionary = linkcodec.mapping_dictionary(context.mapping)
        #: links stored in the table but not yet on its changelog: key -> (changelog partition, link)
        self.unwritten: dict[str, tuple[int, bytes]] = {}
        #: links stored since the last look for settled links (``shrink_settled``)
        self.touched: set[str] = set()
        #: the memory store holds settled links shrunk and one string per link key; a RocksDB
        #: store keeps its values on disk (compressed in blocks), so neither applies there
        self.held_in_memory = context.settings.store.startswith("memory")
        self.refs_seen = -2  # product references at the last check (-2: look at every parked order next)
        self.refs_checked_at = 0.0

    # ------------------------------------------------------------------ the table

    def store(self, table):
        """A table's store, used through its mapping interface only (``StoreT``; ``Collection.data`` is
        Faust's public handle on it): the same calls for the memory and the RocksDB store."""
        return table.data

    def get(self, key: str) -> dict | None:
        raw = self.links.get(key)
        return linkcodec.unpack(key, linkcodec.expand(raw, self.dictionary)) if raw else None

    def put(self, key: str, link: dict) -> None:
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
        held = self.links.get(key)
        if held is None or linkcodec.expand(held, self.dictionary) != raw:
            self.touched.add(key)
            if engine.provisional(link):
                # the store alone (no changelog message): its partition is the current event's, as for
                # a table write
                self.store(self.links)[key] = raw
                self.unwritten[key] = (self.links.partition_for_key(key), raw)
            else:
                self.links[key] = raw
                self.unwritten.pop(key, None)
        self.index(key, link)

    def write_unwritten(self) -> None:
        """Send the provisional link states to the changelog (called at the start of every producer flush)."""
        while self.unwritten:
            key, (partition, raw) = self.unwritten.popitem()
            self.links.send_changelog(partition, key, raw)

    def index(self, key: str, link: dict) -> None:
        self.schedule.set(key, engine.wake_plan(link, self.policy))
        if link.get("held"):
            self.held_links.setdefault(link["flow"], set()).add(key)
        elif self.held_links:
            held = self.held_links.get(link["flow"])
            if held:
                held.discard(key)
        if link["ids"].get(engine.SOURCE) and link["status"] != engine.MOVED:
            summary = (link["flow"], link["status"], bool(link.get("park")), bool(link.get("blocked")))
            summary = self._distinct.setdefault(summary, summary)
            old = self.summaries.get(key)
            if old is not summary:
                if old is not None:
                    self.summary_counts[old] -= 1
                self.summary_counts[summary] += 1
                self.summaries[key] = summary
        elif key in self.summaries:  # a Business NXT record's own link that moved (create_in_source)
            self.summary_counts[self.summaries.pop(key)] -= 1

    async def recovered(self) -> None:
        """After every rebalance: index the links of the partitions this worker owns now (the
        in-memory store keeps links it wrote on partitions that moved to another worker)."""
        owned = {tp.partition for tp in self.context.app.consumer.assignment() if tp.topic == FLOW_EVENTS}
        self.refs_seen = -2  # the next check looks at every parked order (fresh references may have been taken)
        for key in [key for key, (partition, _) in self.unwritten.items() if partition not in owned]:
            del self.unwritten[key]  # its partition moved: the new owner reads its messages again from the commit
        self.share_link_keys()
        self.schedule.clear()
        self.summaries.clear()
        self.summary_counts.clear()
        self.held_links.clear()
        for key, raw in list(self.links.items()):
            if raw and self.context.partition_of(key) in owned:
                self.index(key, linkcodec.unpack(key, linkcodec.expand(raw, self.dictionary)))
        self.touched.clear()
        self.shrink_settled()  # every link just read from the changelog has settled
        self.resumed.update(self.held_links)  # links that held a write back: a tick (held again if still held)
        self.policy.recovered_at = time.time()  # create_in_source's grace counts from here too

    def shrink_settled(self) -> None:
        """Hold the links not stored since the last look shrunk in memory (``linkcodec.shrink``;
        the changelog keeps their JSON). Memory store only, through the store's mapping interface."""
        if self.held_in_memory:
            store = self.store(self.links)
            for key, raw in list(store.items()):
                if raw and raw[:1] != linkcodec.SHRUNK and key not in self.touched and key not in self.unwritten:
                    store[key] = linkcodec.shrink(raw, self.dictionary)
        self.touched.clear()

    def share_link_keys(self) -> None:
        """One string object per link key after a recovery, as while processing: the links table's
        key, the routes that name it, its summary and wake-up (each read from a changelog was a
        string of its own: 75 bytes per key and route). Memory store only, through the stores'
        mapping interface."""
        if not self.held_in_memory:
            return
        store = self.store(self.links)
        for key in [key for key in store.keys() if sys.intern(key) is not key]:
            store[sys.intern(key)] = store.pop(key)
        stored = self.store(self.context.routes)
        for rkey, value in list(stored.items()):
            if isinstance(value, str):
                stored[rkey] = sys.intern(value)
            elif isinstance(value, list):
                stored[rkey] = [sys.intern(key) for key in value]

    # ------------------------------------------------------------------ flow controls

    def on_control(self, control: flowcontrols.FlowControl) -> None:
        self.policy.held_flows = self.context.flow_controls.held()
        metrics.FLOW_PAUSED.labels(control.flow).set(int(control.state == flowcontrols.PAUSED))
        metrics.FLOW_TRIPPED.labels(control.flow).set(int(control.state == flowcontrols.TRIPPED))
        if control.state == flowcontrols.RUNNING:
            self.context.breaker.reset(control.flow)  # resume restarts the window
            self.resumed.add(control.flow)

    async def trip(self, flow_id: str, system: str) -> None:
        """The breaker trips a flow: held here at once, on every worker once they read it."""
        breaker = self.context.breaker
        control = flowcontrols.tripped(flow_id, system, breaker.count(flow_id, system, time.monotonic()) + 1,
                                       breaker.max_writes, breaker.window)
        if self.context.flow_controls.set(control):
            log.error("flow %s tripped: %s; `talkstream flows resume %s` resumes it", flow_id, control.describe(),
                      flow_id)
            await self.context.out.controls.send(key=flow_id.encode(), value=control.to_bytes())

    # ------------------------------------------------------------------ messages

    async def handle_event(self, event) -> None:
        """One flow message (one link's, or a batch of one partition's links)."""
        key = event.key.decode()
        metrics.child(metrics.EVENTS_IN, FLOW_EVENTS).inc()
        try:
            members = flowmessages.unpack(event.key, event.value)
        except Exception as exc:
            await self.context.dead_letters.publish(DeadLetter(
                stage="flow", link_key=key, reason=f"unreadable flow message: {exc}", error_type="invalid_event",
                payload=event.value.decode(errors="replace")[:10000]))
            return
        batched = len(members) != 1 or members[0][0] != key
        commands: list[WriteCommand] = []
        for link_key, member in members:
            if batched and self.context.partition_of(link_key) != event.message.partition:
                # its link lives on another partition: processing it here would split its state
                await self.context.dead_letters.publish(DeadLetter(
                    stage="flow", link_key=link_key, error_type="invalid_event", payload=member,
                    reason=f"batch member on partition {event.message.partition}, its link is on "
                           f"{self.context.partition_of(link_key)} (do all workers have the same "
                           f"TALKSTREAM_PARTITIONS?)"))
                continue
            # one string object per link key, shared by the links table, summaries and wake-ups
            await self.handle(sys.intern(link_key), member, commands)
        await self.send_commands(commands)

    async def send_commands(self, commands: list[WriteCommand]) -> None:
        """The commands of one flow message, after its links were stored: one message per command
        topic and partition (``schemas.command``), members in order. (A flow message's links are
        all on one partition, and the command topics have as many.)"""
        for chunk in flowmessages.chunks_by(commands, lambda c: (c.system, c.entity,
                                                                 self.context.partition_of(c.link_key))):
            topic = self.context.out.commands[(chunk[0].system, chunk[0].entity)]
            metrics.child(metrics.EVENTS_OUT, command_topic(chunk[0].system, chunk[0].entity)).inc()
            await topic.send(key=chunk[0].link_key.encode(),
                             value=encode_command_batch(chunk) if len(chunk) > 1 else chunk[0].to_bytes())

    async def handle(self, key: str, message: dict, commands: list[WriteCommand]) -> None:
        """One message of one link: run the decision, store the link, send its dead letters and
        product references; its commands are added to ``commands`` (the caller sends them)."""
        context, refs, policy = self.context, self.context.refs, self.policy
        try:
            flow = self.mapping.flow(message["flow"])
            kind = message["kind"]
        except Exception as exc:
            await context.dead_letters.publish(DeadLetter(
                stage="flow", link_key=key, reason=f"unreadable flow message: {exc!r}", error_type="invalid_event",
                payload=message))
            return
        now = time.time()
        state = self.get(key)
        if kind == "change":
            context.flow_counts.event(flow.id)

        def decide(state: dict | None) -> engine.Outcome:
            if kind == "change":
                return engine.handle_change(state, flow, entering, key, now=now, refs=refs, policy=policy)
            if kind == "result":
                return engine.handle_result(state, flow, result, record=record, now=now, refs=refs, policy=policy)
            if kind == "redrive":
                return engine.redrive(state, flow, now=now, refs=refs, policy=policy)
            return engine.handle_tick(state, flow, now=now, refs=refs, policy=policy, parked=parked)

        try:
            # the edge: what enters is made canonical here (a change's record when the engine first
            # asks for it), and the engine decides on canonical values only (``streams.canonical``)
            change = ChangeEvent.model_validate(message["event"]) if kind == "change" else None
            entering = canonical.Change(flow, change, refs) if change is not None else None
            result = WriteResult.model_validate(message["result"]) if kind == "result" else None
            record = canonical.record_values(flow, result.system, result.record, refs) if result else None
            parked = canonical.parked(flow, state, refs) if kind == "tick" else None
            sent = (state or {}).get("inflight", {}).get(result.command_id) if result else None
            outcome = decide(state)
            counted = flowcontrols.counted_writes(outcome.commands) if not message.get("resume") else None
            if counted:
                clock = time.monotonic()
                over = context.breaker.admits(flow.id, counted, clock)
                if over is None:
                    context.breaker.note(flow.id, counted, clock)
                else:  # this decision would pass the limit: the flow trips, and it is decided again, held
                    await self.trip(flow.id, over)
                    outcome = decide(self.get(key))
            if result:
                self.observe_result(flow.id, sent, result, now)
        except Exception as exc:  # a bug must not stop every other link: dead-letter and go on
            log.exception("link %s: %s message failed", key, kind)
            await context.dead_letters.publish(DeadLetter(
                stage="flow", flow=flow.id, link_key=key, error_type="internal_error",
                reason=f"{kind} message could not be processed: {exc!r}", payload=message))
            return
        if kind in ("tick", "redrive") and state is None:
            return
        self.put(key, outcome.link)
        record = (decision_of(key, flow.id, kind, outcome, now=now, change=change, result=result)
                  if self.settings.decision_log else None)
        if record is not None:
            await context.out.decisions.send(key=key.encode(), value=record)
        for source_id, target_id in outcome.refs:
            if context.product_refs.put(source_id, target_id):  # one message per new reference
                await context.out.refs.send(key=f"c:{source_id}".encode(), value=target_id.encode())
        metrics.record_actions(flow.id, outcome.actions)
        for action in outcome.actions:
            if action.startswith("warn:"):
                log.warning("link %s: %s", key, action[5:])
        commands.extend(outcome.commands)
        for entry in outcome.deadletters:
            await context.dead_letters.publish(entry)

    def observe_result(self, flow_id: str, sent: dict | None, result: WriteResult, now: float) -> None:
        metrics.child(metrics.WRITES, result.system, result.op, result.status).inc()
        if result.status == "ok" and sent and sent.get("src_t"):
            latency = max(0.0, now - sent["src_t"])
            metrics.child(metrics.SYNC_LATENCY, flow_id).observe(latency)
            self.context.flow_counts.synced(flow_id, latency)

    # ------------------------------------------------------------------ wake-ups

    def due_ticks(self, now: float) -> list[tuple[str, dict]]:
        """A tick for every local link whose wake-up time has come, and for the held links of
        flows that run again."""
        refs, product_refs = self.context.refs, self.context.product_refs
        # parked orders are checked against the product references only when new ones came in
        # (at most twice a second; each product looked up once per check)
        linked = fresh = None
        refs_count = len(product_refs)
        if refs_count != self.refs_seen and now - self.refs_checked_at >= 0.5:
            refs_seen_before, self.refs_seen, self.refs_checked_at = self.refs_seen, refs_count, now
            fresh = product_refs.take_fresh()  # only the orders waiting for one of these are looked at
            if refs_seen_before == -2:
                fresh = None  # after a recovery: every parked order
            known: dict[str, bool] = {}

            def linked(product: str) -> bool:
                if product not in known:
                    known[product] = refs.to_target(product) is not None
                return known[product]
        ticks = [(key, {"kind": "tick", "flow": flow_of(key)}) for key in self.schedule.due(now, linked, fresh)]
        for flow_id in [flow_id for flow_id in self.resumed if flow_id not in self.policy.held_flows]:
            self.resumed.discard(flow_id)
            # one tick each: the write with the latest agreed values; the operator who resumed the
            # flow let these through, so the breaker does not count them (its window starts afresh)
            ticks += [(key, {"kind": "tick", "flow": flow_id, "resume": True})
                      for key in self.held_links.pop(flow_id, ())]
        return ticks


def register(context: Context) -> LinkStage:
    """Add the link agent and its timers to the context's app; returns the stage."""
    app = context.app
    stage = LinkStage(context)
    context.control_listeners.append(stage.on_control)
    faust_fixes.before_producer_flush(stage.write_unwritten)
    context.links.on_recover(stage.recovered)

    @app.agent(context.flow_topic, name="link", concurrency=1)
    async def link_agent(stream):
        """Own each link: decide, record the state, send the commands (one partition per link)."""
        await context.flow_controls.loaded.wait()  # a paused flow must not write while its state is read
        context.policy.held_flows = context.flow_controls.held()
        async for event in stream.events():
            await stage.handle_event(event)

    @app.timer(interval=0.25)
    async def wake_links() -> None:
        """Send a tick to every local link whose wake-up time has come."""
        await context.send_batched(stage.due_ticks(time.time()))

    @app.timer(interval=SHRINK_INTERVAL)
    async def shrink_settled_links() -> None:
        """Every ``SHRINK_INTERVAL``: shrink the links that were not stored since the last time."""
        stage.shrink_settled()

    @app.timer(interval=flowstats.STEP)
    async def publish_flow_counts() -> None:
        """Every ``flowstats.STEP``: what this worker counted per flow, for the console's charts."""
        sample = context.flow_counts.take(context.worker_name, time.time())
        if sample is not None:
            await context.out.stats.send(key=sample[0], value=sample[1])

    stage.agent = link_agent
    return stage
