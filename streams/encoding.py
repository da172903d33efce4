"""Commands encoded for their target system, once, in the sink: canonical values -> the system's fields.

The link stage decides on canonical values and sends them in the command
(``WriteCommand.values``); the sink encodes them with the mapping
(``Flow.to_target_data`` / ``Flow.to_source_data``) into ``data`` just before the
writer applies it. A value the target cannot take becomes an ``invalid`` result
(the link dead-letters it as it did any unconvertible value); a product
reference not linked on this worker yet (its link came from another worker a
moment ago) a ``retryable`` one.
"""
from __future__ import annotations

from typing import Any

from schemas.command import WriteCommand, WriteResult
from streams.mapping import Flow, MappingError, MissingReferences, RefResolver


def encode(command: WriteCommand, flow: Flow, refs: RefResolver | None, settings: Any) -> WriteCommand:
    """The command with ``data`` for its system (raises ``MappingError`` or ``MissingReferences``)."""
    if command.values is None:
        return command  # its data is the target's already (an origin stamp, a delete)
    create = command.op == "create"
    if command.system == flow.target.system:
        data = flow.to_target_data(command.values, create=create, settings=settings, refs=refs,
                                   source_id=command.source_id if create else None)
    else:
        data = flow.to_source_data(command.values, create=create)
        if create:  # an empty value is left out: the new record takes Customcrm's default (Discount "0", ...)
            data = {k: v for k, v in data.items() if v is not None}
    return command.model_copy(update={"data": data, "values": None})


def encoded(commands: list[WriteCommand], flow_of, refs: RefResolver | None,
            settings: Any) -> tuple[list[WriteCommand], list[WriteResult]]:
    """The commands to apply, encoded, and the results of those that cannot be (not sent)."""
    ready: list[WriteCommand] = []
    refused: list[WriteResult] = []
    for command in commands:
        try:
            ready.append(encode(command, flow_of(command.flow), refs, settings))
        except MissingReferences as exc:
            refused.append(_result(command, "retryable", f"products not linked here yet: {', '.join(exc.ids)}"))
        except MappingError as exc:
            refused.append(_result(command, "invalid", str(exc)))
    return ready, refused


def _result(command: WriteCommand, status: str, error: str) -> WriteResult:
    return WriteResult(command_id=command.command_id, flow=command.flow, link_key=command.link_key,
                       system=command.system, entity=command.entity, op=command.op, status=status,
                       target_id=command.target_id, error=error, attempt=command.attempt)
