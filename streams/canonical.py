"""Records made canonical as they enter the link stage: the engine decides on canonical values only.

A change event's record is converted by the mapping (``Flow.to_canonical``) when the
engine first asks for its values, and only then: an echo of our own write or a stale
version is skipped before it is ever converted. What the conversion found is data
for the engine: the values (and a source record's create-only values apart), the
products its lines name that are not linked yet (the link parks), or why it cannot
be read (a dead letter). The way out is ``streams.encoding``: a command is encoded
for its target system once, in the sink.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from schemas.change import ChangeEvent
from streams.mapping import Flow, MappingError, MissingReferences, RefResolver


@dataclass(frozen=True)
class Canonical:
    values: dict[str, Any] | None = None  # None: not readable (``missing`` or ``error`` says why)
    co: dict[str, Any] = field(default_factory=dict)  # a source record's create-only values (its Sku, ...)
    missing: tuple[str, ...] = ()  # Customcrm product ids its lines name that are not linked yet
    error: MappingError | None = None


class Change:
    """A change event and, when first asked for, its record's canonical values."""

    def __init__(self, flow: Flow, event: ChangeEvent, refs: RefResolver | None) -> None:
        self.flow = flow
        self.event = event
        self.refs = refs

    @cached_property
    def canonical(self) -> Canonical:
        flow, record = self.flow, self.event.data or {}
        try:
            if self.event.system == flow.source.system:  # the create-only values are split off
                values = flow.to_canonical("source", record, refs=self.refs, include_create_only=True)
                return Canonical(values, {p: values.pop(p) for p in flow.create_only_names() if p in values})
            return Canonical(flow.to_canonical("target", record, refs=self.refs))
        except MissingReferences as exc:
            return Canonical(missing=tuple(exc.ids))
        except MappingError as exc:
            return Canonical(error=exc)


def parked(flow: Flow, link: dict | None, refs: RefResolver | None) -> Change | None:
    """The change a parked link waits with (``park.event``), to be made canonical again on a tick (its
    products may be linked now); None when it waits with none."""
    event = ((link or {}).get("park") or {}).get("event")
    return Change(flow, ChangeEvent.model_validate(event), refs) if event else None


def record_values(flow: Flow, system: str, record: dict | None, refs: RefResolver | None) -> dict | None:
    """The canonical values of a record a write's result carries (None: none, or not readable)."""
    if record is None:
        return None
    try:
        return flow.to_canonical("source" if system == flow.source.system else "target", record, refs=refs)
    except (MissingReferences, MappingError):
        return None
