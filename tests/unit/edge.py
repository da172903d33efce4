"""The engine's inputs as the link stage makes them, and a command's data as the sink encodes it.

The decisions take canonical values (``streams.canonical``: a change made canonical
at the edge, a result's record, a parked change again) and send canonical values
(``streams.encoding`` encodes them in the sink). The unit tests of the decisions
call the engine through these, with raw events and results as the systems give them.
"""
from __future__ import annotations

from schemas.command import WriteCommand
from streams import canonical, encoding, engine
from streams.mapping import load_mapping

MAPPING = load_mapping()


def handle_change(link, flow, event, key, *, now, refs, policy) -> engine.Outcome:
    return engine.handle_change(link, flow, canonical.Change(flow, event, refs), key, now=now, refs=refs,
                                policy=policy)


def handle_result(link, flow, result, *, now, refs, policy) -> engine.Outcome:
    return engine.handle_result(link, flow, result, record=canonical.record_values(flow, result.system, result.record,
                                                                                   refs),
                                now=now, refs=refs, policy=policy)


def handle_tick(link, flow, *, now, refs, policy) -> engine.Outcome:
    return engine.handle_tick(link, flow, now=now, refs=refs, policy=policy,
                              parked=canonical.parked(flow, link, refs))


def data(command: WriteCommand, refs=None, settings=None) -> dict:
    """The command's data for its system, as the sink encodes it."""
    return encoding.encode(command, MAPPING.flow(command.flow), refs, settings).data
