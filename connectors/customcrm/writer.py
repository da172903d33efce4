"""The Customcrm writer: applies WriteCommands through the bulk endpoint.

``CustomcrmWriter(client).apply(commands)`` returns one :class:`WriteResult`
per command, in order. Commands are grouped per resource (keeping their
relative order) into bulk requests of at most 100 operations. A create carries
``command.idempotency_key`` (or, when it has none, the deterministic
``command_id``) as its idempotency key, so re-sending a bulk request whose
outcome is unknown (timeout after the server committed) never creates a
second record. An update/delete carries ``command.expected_version`` as its
``if_version`` (If-Match); an update answered ``412`` whose values the record
already holds (our own earlier attempt committed but its answer was lost) is
reported ``ok``, not ``conflict``.

Pure parts: :func:`operation_of` (command -> bulk operation) and
:func:`result_of` (bulk result -> WriteResult status: ok / retryable /
permanent / conflict / not_found).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from connectors.common.errors import ApiError
from connectors.customcrm import RESOURCES
from connectors.customcrm.client import error_from_body
from schemas.command import WriteCommand, WriteResult

log = logging.getLogger(__name__)

MAX_BULK = 100


def _result(command: WriteCommand, status: str, **kw: Any) -> WriteResult:
    return WriteResult(
        command_id=command.command_id, flow=command.flow, link_key=command.link_key,
        system=command.system, entity=command.entity, op=command.op, status=status,
        attempt=command.attempt, **kw,
    )


def operation_of(command: WriteCommand) -> dict:
    """The bulk operation for a command; ``ValueError`` when the command cannot be sent."""
    if command.system != "customcrm":
        raise ValueError(f"command {command.command_id} is for {command.system}, not customcrm")
    if command.entity not in RESOURCES:
        raise ValueError(f"command {command.command_id}: unknown Customcrm entity {command.entity!r}")
    if command.op == "create":
        return {"op": "create", "idempotency_key": command.idempotency_key or command.command_id,
                "data": command.data}
    if not command.target_id:
        raise ValueError(f"command {command.command_id}: {command.op} needs a target_id")
    if command.op == "update":
        return {"op": "update", "id": command.target_id, "if_version": _if_version(command), "data": command.data}
    return {"op": "delete", "id": command.target_id, "if_version": _if_version(command)}


def _if_version(command: WriteCommand) -> int | None:
    """Customcrm's If-Match: the record's Version the write was derived from."""
    return int(command.expected_version) if command.expected_version else None


def describe(command: WriteCommand) -> str:
    target = command.target_id or "(new)"
    return f"{command.op} customcrm {command.entity} {target} (command {command.command_id})"


def result_of(command: WriteCommand, outcome: dict) -> WriteResult:
    """Classify one bulk result ``{"status", "record", "error"}`` of ``command``."""
    status = outcome.get("status")
    record = outcome.get("record") if isinstance(outcome.get("record"), dict) else None
    if isinstance(status, int) and 200 <= status < 300:
        target_id = record.get("Id") if record else command.target_id
        version = str(record["Version"]) if record and "Version" in record else None
        return _result(command, "ok", target_id=target_id, version=version, record=record)
    if not isinstance(status, int):
        return _result(command, "retryable", target_id=command.target_id,
                       error=f"{describe(command)}: malformed bulk result {outcome!r}")
    exc = error_from_body(describe(command), status, outcome.get("error"))
    return _result(command, exc.status_kind, target_id=command.target_id, error=str(exc))


def result_of_error(command: WriteCommand, exc: ApiError) -> WriteResult:
    """Every command of a bulk request that failed as a whole gets the request's error."""
    return _result(command, exc.status_kind, target_id=command.target_id,
                   error=f"{describe(command)}: bulk request failed: {exc}")


class CustomcrmWriter:
    """Applies write commands to Customcrm (see module docstring)."""

    def __init__(self, client: Any, *, chunk_size: int = MAX_BULK) -> None:
        if not 1 <= chunk_size <= MAX_BULK:
            raise ValueError(f"chunk_size must be 1..{MAX_BULK}")
        self.client = client
        self.chunk_size = chunk_size

    async def apply(self, commands: Sequence[WriteCommand]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(commands)
        groups: dict[str, list[tuple[int, dict]]] = {}
        for i, command in enumerate(commands):
            try:
                op = operation_of(command)
            except ValueError as exc:
                results[i] = _result(command, "permanent", target_id=command.target_id, error=str(exc))
                continue
            groups.setdefault(RESOURCES[command.entity], []).append((i, op))
        for resource, entries in groups.items():
            for start in range(0, len(entries), self.chunk_size):
                chunk = entries[start:start + self.chunk_size]
                try:
                    outcomes = await self.client.bulk(resource, [op for _, op in chunk])
                except ApiError as exc:
                    log.warning("bulk write of %d %s failed: %s", len(chunk), resource, exc)
                    for i, _ in chunk:
                        results[i] = result_of_error(commands[i], exc)
                    continue
                for (i, _), outcome in zip(chunk, outcomes):
                    results[i] = result_of(commands[i], outcome)
                    if results[i].status == "conflict" and commands[i].op == "update":
                        results[i] = await self._settle_conflict(resource, commands[i], results[i])
        return [r for r in results if r is not None]

    async def _settle_conflict(self, resource: str, command: WriteCommand, conflict: WriteResult) -> WriteResult:
        """A 412 on an update whose values are already stored is our own earlier attempt
        (committed, but the answer was lost) or an identical edit: the write is done."""
        try:
            record = await self.client.get(resource, command.target_id)
        except ApiError:
            return conflict
        if already_applied(record, command.data):
            return _result(command, "ok", target_id=record["Id"], version=str(record["Version"]), record=record)
        return conflict


def already_applied(record: dict, patch: dict) -> bool:
    """Does ``record`` already hold every value of ``patch`` (and is it not deleted)?"""
    return not record.get("Deleted") and all(record.get(k) == v for k, v in patch.items())
