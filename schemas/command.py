"""Write commands to a system and their acknowledgements (internal topics).

Flow agents publish ``WriteCommand`` to ``talkstream.<system>.<entity>.commands``;
sink agents apply them through the connector's writer and send one
``WriteResult`` per command back to ``talkstream.flow.events`` (in the flow
topic's batches, ``streams.flowmessages``), keyed by the link key, so the
agent that owns the link records the outcome.

The link agent sends the commands of many links of one partition as one
message, ``{"schema": "talkstream.command-batch/v1", "commands": [<command>,
...]}`` (``encode_command_batch``), keyed by its first command's link key: a
produce and a consume per batch instead of per command. Every member's link
key is on that partition and members keep their order, so one link's commands
stay in order. A message holding one bare command is read as well
(``command_members``).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas import codec
from schemas.change import utcnow

COMMAND_SCHEMA = "talkstream.command/v1"
COMMAND_BATCH_SCHEMA = "talkstream.command-batch/v1"
RESULT_SCHEMA = "talkstream.result/v1"


def command_topic(system: str, entity: str) -> str:
    return f"talkstream.{system}.{entity}.commands"


def ack_topic() -> str:
    return "talkstream.acks"


class WriteCommand(BaseModel):
    """One write to one record of a target system.

    The link stage sends ``values`` (canonical, by Customcrm property name); the
    sink encodes them once into ``data``, the target system's property names and
    values (e.g. Businessnxt ``orderDate`` as an int yyyymmdd), which the writer
    applies (``streams.encoding``). For a
    Businessnxt order, ``data["orderLines"]`` is the complete desired list of
    lines: on create they are created with the head; on update the writer makes
    the stored lines equal to that list.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["talkstream.command/v1"] = Field(default=COMMAND_SCHEMA, alias="schema")
    command_id: str = Field(description="Unique and deterministic per intended write.")
    flow: str
    link_key: str
    system: Literal["customcrm", "businessnxt"]
    entity: str
    op: Literal["create", "update", "delete"]
    target_id: str | None = Field(default=None, description="Id of the record to update/delete.")
    expected_version: str | None = Field(
        default=None,
        description="Optimistic concurrency: the target record's version the write was derived from (Customcrm: "
        "its Version, sent as If-Match; Businessnxt: its UTC change time); a record changed since is not "
        "overwritten (result status conflict).")
    idempotency_key: str | None = Field(
        default=None,
        description="Customcrm Idempotency-Key of a create; for Businessnxt the origin stamp "
        "(e.g. customcrm:order:ord_1) written to the flow's origin field.",
    )
    origin_field: str | None = Field(default=None, description="Businessnxt field holding the origin stamp.")
    match: dict[str, Any] | None = Field(
        default=None, description="Natural key to look up before creating (e.g. {'productNo': 'SKU-1'})."
    )
    values: dict[str, Any] | None = Field(
        default=None, description="The values to write, canonical and by Customcrm property name; the sink encodes "
        "them into data for the target system (None: data is already the target's, e.g. an origin stamp).")
    source_id: str | None = Field(default=None, description="The Customcrm record's Id, for the origin stamp a "
                                  "create writes to Businessnxt.")
    data: dict[str, Any] = Field(default_factory=dict)
    attempt: int = 1
    created_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _one_concurrency_field(cls, data: Any) -> Any:
        """A command an earlier talkstream wrote carried Customcrm's version as ``if_version``: read it as
        ``expected_version`` (commands still on their topic during an upgrade)."""
        if isinstance(data, dict) and "if_version" in data:
            data = dict(data)
            legacy = data.pop("if_version")
            if legacy is not None and data.get("expected_version") is None:
                data["expected_version"] = str(legacy)
        return data

    def to_bytes(self) -> bytes:
        # pydantic's own JSON: the same document as model_dump(mode="json") encoded, at half the cost
        return self.__pydantic_serializer__.to_json(self, by_alias=True)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "WriteCommand":
        return cls.model_validate(codec.loads(raw))


class WriteResult(BaseModel):
    """The outcome of one WriteCommand."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["talkstream.result/v1"] = Field(default=RESULT_SCHEMA, alias="schema")
    command_id: str
    flow: str
    link_key: str
    system: Literal["customcrm", "businessnxt"]
    entity: str
    op: Literal["create", "update", "delete"]
    status: Literal["ok", "retryable", "permanent", "conflict", "not_found", "invalid"] = Field(
        description="ok: applied; retryable: try again later; permanent: will never succeed; "
        "conflict: version mismatch (re-read and merge); not_found: target is gone; invalid: the values "
        "cannot be written to the target system (not sent)."
    )
    target_id: str | None = None
    version: str | None = None
    record: dict[str, Any] | None = Field(default=None, description="The record as stored after the write.")
    matched: bool = Field(default=False, description="A create found an existing record instead of creating.")
    error: str | None = None
    attempt: int = 1
    finished_at: datetime = Field(default_factory=utcnow)

    def to_bytes(self) -> bytes:
        # pydantic's own JSON: the same document as model_dump(mode="json") encoded, at half the cost
        return self.__pydantic_serializer__.to_json(self, by_alias=True)

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "WriteResult":
        return cls.model_validate(codec.loads(raw))


def encode_command_batch(commands: Sequence[WriteCommand]) -> bytes:
    """Several commands (of one partition) as one command-topic message."""
    return codec.dumps({"schema": COMMAND_BATCH_SCHEMA,
                        "commands": [orjson.Fragment(c.to_bytes()) for c in commands]})


def command_members(raw: bytes | str) -> list[Any]:
    """The commands one command-topic message carries, as plain data, not yet validated: a
    batch's members, or the one bare command (raises on a message that is not JSON)."""
    value = codec.loads(raw)
    if isinstance(value, dict) and value.get("schema") == COMMAND_BATCH_SCHEMA:
        members = value.get("commands")
        if not isinstance(members, list):
            raise ValueError("command batch without a list of commands")
        return members
    return [value]
