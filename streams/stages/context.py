"""What the stages share: the topics, the tables, the worker's services and the engine's policy.

``build(app, settings, mapping)`` declares everything on one Faust app and returns
it as a ``Context``; each stage module's ``register(context)`` adds its agents and
timers. ``streams.topology`` does that for the worker's app; a test does it for an
app of its own, and may give the stages other outputs (``Outputs``: Faust channels
instead of topics).
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from connectors.common.deadletters import DeadLetters
from connectors.common.kafka import SINGLE_RECORD_BATCH_SIZE, bootstrap_servers, durability_configs
from schemas.command import command_topic
from schemas.deadletter import DEADLETTER_TOPIC
from schemas.decision import DECISIONS_TOPIC
from streams import controls as flowcontrols, engine, flowmessages, flowstats, metrics
from streams.controlfollower import FlowControls
from streams.mapping import Mapping
from streams.pacing import ReferencePacer
from streams.refs import REFS_TOPIC, SharedRefs
from streams.runtime import Runtime
from streams.settings import Settings
from streams.topics import FLOW_EVENTS, change_topics, entities


class TableRefs:
    """Product references across links (Customcrm product Id <-> productNo), from ``streams.refs``."""

    def __init__(self, refs: SharedRefs) -> None:
        self.refs = refs

    def to_target(self, source_id: str) -> str | None:
        return self.refs.get(f"c:{source_id}")

    def to_source(self, target_id: str) -> str | None:
        return self.refs.get(f"b:{target_id}")


@dataclass
class Outputs:
    """Where the stages send: anything with ``async send(key=, value=)`` (Faust topics or channels)."""

    flow_events: Any
    commands: dict[tuple[str, str], Any]
    deadletters: Any
    decisions: Any
    stats: Any
    refs: Any
    controls: Any


@dataclass
class Context:
    app: faust.App
    settings: Settings
    mapping: Mapping
    entities: list[tuple[str, str]]
    change_topics: Any
    flow_topic: Any
    command_topics: dict[tuple[str, str], Any]
    out: Outputs
    links: Any
    routes: Any
    product_refs: SharedRefs
    refs: TableRefs
    pacer: ReferencePacer
    runtime: Runtime
    policy: engine.Policy
    flow_controls: FlowControls
    breaker: flowcontrols.Breaker
    dead_letters: DeadLetters
    flow_counts: flowstats.FlowCounts = field(default_factory=flowstats.FlowCounts)
    worker_name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    #: called with each flow control a worker learns (the link stage listens)
    control_listeners: list[Callable[[flowcontrols.FlowControl], None]] = field(default_factory=list)

    @property
    def partitions(self) -> int:
        return self.settings.partitions

    def partition_of(self, key: str) -> int:
        """The flow-topic partition of a link key."""
        return flowmessages.partition_of(key, self.partitions)

    def single_record_batches(self) -> bool:
        return self.app.conf.producer_max_batch_size == SINGLE_RECORD_BATCH_SIZE

    async def send_batched(self, messages: list[tuple[str, dict]]) -> None:
        """Many links' messages (changes, results, ticks): one ``batch`` flow message per partition
        (``streams.flowmessages``)."""
        for key, value in flowmessages.batches(messages, self.partition_of):
            metrics.child(metrics.EVENTS_OUT, FLOW_EVENTS).inc()
            await self.out.flow_events.send(key=key, value=value)

    def _on_control(self, control: flowcontrols.FlowControl) -> None:
        for listener in self.control_listeners:
            listener(control)


def build(app: faust.App, settings: Settings, mapping: Mapping, *, outputs: Outputs | None = None) -> Context:
    """Declare the topics, tables and services of the pipeline on ``app``."""
    partitions = settings.partitions
    pairs = entities(mapping)

    def raw_topic(*names: str, partitions: int = partitions):
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                         partitions=partitions)

    command_topics = {pair: raw_topic(command_topic(*pair)) for pair in pairs}
    flow_topic = raw_topic(FLOW_EVENTS)
    out = outputs or Outputs(
        flow_events=flow_topic,
        commands=command_topics,
        deadletters=raw_topic(DEADLETTER_TOPIC),
        decisions=raw_topic(DECISIONS_TOPIC),
        stats=raw_topic(flowstats.STATS_TOPIC, partitions=1),
        refs=raw_topic(REFS_TOPIC),
        controls=raw_topic(flowcontrols.CONTROLS_TOPIC, partitions=1),
    )
    # each link as compact JSON bytes (``streams.linkcodec``): far less memory than the dict, and
    # no Faust JSON encoding per write; the changelogs get min.insync.replicas (Faust gives them
    # ``topic_replication_factor`` replicas)
    changelog_configs = durability_configs(settings.replication_factor)
    links = app.Table("links", default=None, partitions=partitions, value_type=bytes,
                      extra_topic_configs=changelog_configs)
    routes = app.Table("routes", default=None, partitions=partitions, extra_topic_configs=changelog_configs)
    bootstrap = bootstrap_servers(settings.broker_url())
    product_refs = SharedRefs(bootstrap)
    refs = TableRefs(product_refs)
    pacer = ReferencePacer(mapping, linked=lambda product: refs.to_target(product) is not None,
                           links_made=lambda: len(product_refs), bound=settings.reference_wait)
    policy = engine.Policy(park_timeout=settings.park_timeout, write_retry_max=settings.write_retry_max,
                           ack_timeout=settings.ack_timeout, settings=settings)
    context: Context

    def on_control(control: flowcontrols.FlowControl) -> None:
        context._on_control(control)

    context = Context(
        app=app, settings=settings, mapping=mapping, entities=pairs,
        change_topics=raw_topic(*change_topics(mapping)), flow_topic=flow_topic, command_topics=command_topics,
        out=out, links=links, routes=routes, product_refs=product_refs, refs=refs, pacer=pacer,
        runtime=Runtime(settings, pairs, single_record_batches=lambda: context.single_record_batches(), pacer=pacer),
        policy=policy, flow_controls=FlowControls(bootstrap, on_change=on_control),
        breaker=flowcontrols.Breaker(settings.breaker_max_writes, settings.breaker_window),
        dead_letters=DeadLetters(lambda key, value: out.deadletters.send(key=key, value=value),
                                 counted=metrics.count_dead_letter),
    )
    return context


def start_services(context: Context) -> None:
    """Start the worker's services with the app: the systems' clients, the followers of the
    product references and the flow controls."""
    for service in (context.product_refs, context.runtime, context.flow_controls):
        context.app.service(service)
