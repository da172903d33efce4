"""Which flow and which link a change event belongs to (pure).

Link keys are ``<flow>:<ident>``, derived from data both sides carry, so both
systems' events of one link meet on one partition of ``talkstream.flow.events``:

- flows with an origin stamp (orders): ``<flow>:<Customcrm Id>``; a
  Businessnxt row names its Customcrm record in the flow's origin field, and
  the stamp's prefix says which flow owns the row (a Businessnxt order belongs
  to the flow that linked it);
- flows with a match key (products): ``<flow>:<key>`` — the ``Sku`` as first
  seen on the Customcrm side, the ``productNo`` on the Businessnxt side;
- with ``create_in_source``, a Businessnxt row with no stamp at all:
  ``<flow>:@businessnxt:<key>``, the link that creates its Customcrm record and
  stamps the row; from then on the row routes by its stamp (a row stamped for
  another flow is never taken).

The router remembers the key it gave each record (``known``) when the data
alone would not give it again: a Customcrm product whose ``Sku`` changed after
linking stays on its link, and a Businessnxt delete tombstone (no row data)
finds the link its row had. The ``routes`` table stores that memory as the link
keys alone (``stored_routes``; a key starts with its flow id): one string for a
record of one flow, the same string object the links table holds.
"""
from __future__ import annotations

from schemas.change import ChangeEvent
from streams.linkkeys import flow_of, link_key, target_origin_key
from streams.mapping import Flow, Mapping


def route_key(event: ChangeEvent) -> str:
    """Key of the router's memory for one record."""
    return f"{event.system}:{event.entity}:{event.id}"


def stored_routes(remembered: dict[str, str]) -> str | list[str]:
    """The router's memory of one record as the ``routes`` table holds it: its link key (a
    list of keys for a record of several flows)."""
    keys = list(remembered.values())
    return keys[0] if len(keys) == 1 else keys


def known_routes(stored: str | list[str] | dict[str, str] | None) -> dict[str, str] | None:
    """``{flow id: link key}`` from what ``stored_routes`` stored (or the dict that earlier
    versions stored)."""
    if stored is None or isinstance(stored, dict):
        return stored
    return {flow_of(key): key for key in ([stored] if isinstance(stored, str) else stored)}


def route(mapping: Mapping, event: ChangeEvent, known: dict[str, str] | None
          ) -> tuple[list[tuple[Flow, str]], dict[str, str] | None]:
    """The (flow, link key) pairs of an event, and the updated memory (None: unchanged)."""
    known = known or {}
    remembered = dict(known)
    routes: list[tuple[Flow, str]] = []
    data = event.data or {}
    for flow in mapping.flows_for(event.system, event.entity):
        key: str | None = None
        if event.system == flow.source.system:
            if flow.match is not None:
                key = known.get(flow.id)
                if key is None:
                    value = flow.match_value("source", data)
                    key = link_key(flow.id, value) if value else None
                    if key:
                        remembered[flow.id] = key
            else:
                key = link_key(flow.id, event.id)
        else:
            if flow.origin is not None:
                stamp = data.get(flow.origin.field) if data else None
                source_id = flow.parse_origin(stamp)
                if source_id:
                    key = link_key(flow.id, source_id)
                    if known.get(flow.id) != key:
                        remembered[flow.id] = key
                else:
                    key = known.get(flow.id)
                    if key is None and data and not stamp and flow.create_in_source:
                        # a row no flow links yet: its own link, which creates its Customcrm record
                        key = target_origin_key(flow.id, event.id)
                        remembered[flow.id] = key
            elif flow.match is not None:
                key = link_key(flow.id, event.id)
        if key:
            routes.append((flow, key))
    return routes, (remembered if remembered != known else None)
