"""The sink stage: write commands -> the target system -> results back to the link stage.

One agent per command topic takes batches of commands, encodes each command's
canonical values for its system, once (``streams.encoding``: a value the system
cannot take becomes an ``invalid`` result, not a request), hands them to the
connector's writer (``connectors/<system>/writer.py``: retries, backoff, rate
limits, idempotent creates) and sends each write's result to
``talkstream.flow.events``, where the link that owns it records it. An unreadable
command is dead-lettered.
"""
from __future__ import annotations

import time

import orjson

from schemas.command import WriteCommand, command_members
from schemas.deadletter import DeadLetter
from streams import encoding, metrics
from streams.stages.context import Context

#: Writes (of ``TALKSTREAM_SINK_BATCH_SIZE`` records) a sink hands its writer at once. The
#: writer runs their creates side by side, and Business NXT's request line carries calls that
#: wait together in one HTTP request: under its 600 requests/minute, four writes' look-ups
#: and creates cost about what one write's did.
SINK_WRITES_TOGETHER = 4


def register(context: Context) -> dict:
    """Add one sink agent per command topic to the context's app; returns them by (system, entity)."""
    return {pair: _sink(context, *pair) for pair in context.entities}


def _sink(context: Context, system: str, entity: str):
    topic = context.command_topics[(system, entity)]
    settings, runtime = context.settings, context.runtime

    async def unpack(raw: bytes) -> list[WriteCommand]:
        try:
            members = command_members(raw)
        except Exception as exc:
            await context.dead_letters.publish(DeadLetter(
                stage="sink", system=system, entity=entity, reason=f"unreadable command message: {exc}",
                error_type="invalid_command", payload=raw.decode(errors="replace")[:10000]))
            return []
        commands = []
        for member in members:
            try:
                commands.append(WriteCommand.model_validate(member))
            except Exception as exc:
                await context.dead_letters.publish(DeadLetter(
                    stage="sink", system=system, entity=entity, reason=f"unreadable write command: {exc}",
                    error_type="invalid_command", payload=member))
        return commands

    async def sink(stream):
        per_apply = settings.sink_batch_size * SINK_WRITES_TOGETHER
        async for values in stream.take(per_apply, within=settings.sink_batch_wait):
            commands: list[WriteCommand] = []
            for raw in values:
                commands.extend(await unpack(raw))
            metrics.child(metrics.EVENTS_IN, topic.get_topic_name()).inc(len(commands))
            for start in range(0, len(commands), per_apply):  # command batches: more than one apply
                # the edge out: each command's canonical values encoded for its system, once
                chunk, results = encoding.encoded(commands[start:start + per_apply], context.mapping.flow,
                                                  context.refs, settings)
                await runtime.ready.wait()
                started = time.monotonic()
                results += await runtime.writers[system].apply(chunk) if chunk else []
                metrics.child(metrics.API_LATENCY, system, entity).observe(time.monotonic() - started)
                await context.send_batched([(result.link_key, {"kind": "result", "flow": result.flow,
                                                               "result": orjson.Fragment(result.to_bytes())})
                                            for result in results])

    sink.__name__ = f"sink_{system}_{entity}"
    return context.app.agent(topic, name=f"sink-{system}-{entity}", concurrency=1)(sink)
