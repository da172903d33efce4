"""The route stage: change events -> the flow topic, keyed by link key.

Each change event gets its flows and link keys (``streams.routing``; the ``routes``
table remembers the key it gave each record) and goes onto
``talkstream.flow.events``, the events of many links in one message per partition
(``streams.flowmessages``). An unreadable event is dead-lettered.
"""
from __future__ import annotations

import sys

import orjson

from connectors.common.patches import faust_fixes
from schemas.change import ChangeEvent
from schemas.deadletter import DeadLetter
from streams import flowmessages, metrics
from streams.routing import known_routes, route, route_key, stored_routes
from streams.stages.context import Context

#: Change events routed together, and the longest the route waits to fill a batch (the hop's
#: added latency when changes trickle in).
ROUTE_BATCH = flowmessages.BATCH_MEMBERS
ROUTE_BATCH_WAIT = 0.05


def register(context: Context):
    """Add the route agent to the context's app; returns it."""
    mapping, routes = context.mapping, context.routes

    async def route_one(event) -> list[tuple[str, dict]]:
        """The flow messages of one change event (none for a dead letter); remembers its link keys."""
        topic = event.message.topic
        metrics.child(metrics.EVENTS_IN, topic).inc()
        try:
            change = ChangeEvent.from_bytes(event.value)
        except Exception as exc:  # unparseable or schema-invalid payload: dead letter, keep going
            await context.dead_letters.publish(DeadLetter(
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

    @context.app.agent(context.change_topics, name="route", concurrency=1)
    async def route_changes(stream):
        """Give each change event its flows and link keys; re-key it onto the flow topic, the
        events of many links in one message per partition. Faust acknowledges a batch's events
        only after this loop's body sent it."""
        async for events in stream.take_events(ROUTE_BATCH, within=ROUTE_BATCH_WAIT):
            routed: list[tuple[str, dict]] = []
            for event in events:
                routed.extend(await route_one(event))
            await context.send_batched(routed)

    return route_changes
