"""Every topic talkstream uses, derived from the mapping, and their creation.

Topics are created explicitly (CreateTopics) before a worker's clients touch
them: the embedded broker would otherwise create them on the first metadata
request, and clients racing that creation saw the topic unavailable for a
whole request timeout (40 s). Change topics are compacted in production.
"""
from __future__ import annotations

import asyncio
import logging
import threading

from connectors.common.kafka import bootstrap_servers, ensure_topics
from connectors.common.watermarks import WATERMARK_TOPIC
from schemas.change import change_topic
from schemas.command import command_topic
from schemas.deadletter import DEADLETTER_TOPIC
from schemas.decision import DECISIONS_TOPIC
from streams.mapping import Mapping
from streams.controls import CONTROLS_TOPIC
from streams.flowstats import STATS_TOPIC, TOPIC_CONFIGS as STATS_CONFIGS
from streams.refs import REFS_TOPIC

log = logging.getLogger(__name__)

FLOW_EVENTS = "talkstream.flow.events"


def entities(mapping: Mapping) -> list[tuple[str, str]]:
    """Every (system, entity) a flow uses, in mapping order."""
    return list(dict.fromkeys(
        pair for flow in mapping.flows
        for pair in ((flow.source.system, flow.source.entity), (flow.target.system, flow.target.entity))))


def change_topics(mapping: Mapping) -> list[str]:
    return [change_topic(s, e) for s, e in entities(mapping)]


def internal_topics(mapping: Mapping) -> list[str]:
    return [FLOW_EVENTS, DEADLETTER_TOPIC, DECISIONS_TOPIC, *[command_topic(s, e) for s, e in entities(mapping)]]


def create_all(broker_url: str, mapping: Mapping, partitions: int, timeout: float = 30.0) -> None:
    """Create every topic that does not exist yet (blocking; runs in its own thread and loop)."""
    errors: list[BaseException] = []

    async def run() -> None:
        bootstrap = bootstrap_servers(broker_url)
        await ensure_topics(bootstrap, change_topics(mapping), partitions=partitions,
                            compact=change_topics(mapping))
        await ensure_topics(bootstrap, internal_topics(mapping), partitions=partitions)
        await ensure_topics(bootstrap, [WATERMARK_TOPIC], partitions=1, compact=[WATERMARK_TOPIC])
        await ensure_topics(bootstrap, [REFS_TOPIC], partitions=partitions, compact=[REFS_TOPIC])
        await ensure_topics(bootstrap, [CONTROLS_TOPIC], partitions=1, compact=[CONTROLS_TOPIC])
        await ensure_topics(bootstrap, [STATS_TOPIC], partitions=1, configs=STATS_CONFIGS)

    def target() -> None:
        try:
            asyncio.run(asyncio.wait_for(run(), timeout))
        except BaseException as exc:  # reported to the caller
            errors.append(exc)

    thread = threading.Thread(target=target, name="create-topics", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if errors:
        raise RuntimeError(f"could not create the topics on {broker_url}: {errors[0]!r}") from errors[0]
