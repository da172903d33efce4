"""The change event: one record version observed in one system (a public contract).

Published to ``<system>.<entity>.changes``, keyed by the record's id in that
system (UTF-8). Compare Debezium's envelope: ``op`` is ``upsert`` or
``delete``, ``data`` is the record as the system returned it (``None`` for a
delete that carries no row, e.g. a Businessnxt webhook tombstone).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import codec

CHANGE_SCHEMA = "talkstream.change/v1"

System = Literal["customcrm", "businessnxt"]


def change_topic(system: str, entity: str) -> str:
    """Name of the public change topic of one system x entity."""
    return f"{system}.{entity}.changes"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ChangeEvent(BaseModel):
    """One version of one record, as observed by a poller or a webhook."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["talkstream.change/v1"] = Field(
        default=CHANGE_SCHEMA, alias="schema", description="Envelope schema id and version."
    )
    system: System = Field(description="The system the record lives in.")
    entity: str = Field(description="Entity name in lower case: order, product, user.")
    id: str = Field(min_length=1, description="The record's id in its system (also the Kafka key).")
    op: Literal["upsert", "delete"] = Field(description="upsert: created or changed; delete: removed.")
    version: str | None = Field(
        default=None,
        description="Source version: Customcrm Version, or Businessnxt changedTimestamp "
        "(null for legacy rows never touched).",
    )
    modified_at: datetime | None = Field(
        default=None, description="Source modification time in UTC (null when the system has none)."
    )
    observed_at: datetime = Field(default_factory=utcnow, description="When talkstream read it (UTC).")
    origin: Literal["poll", "webhook", "replay", "rebuild"] = Field(
        default="poll", description="How the event was obtained."
    )
    data: dict[str, Any] | None = Field(
        default=None, description="The record as the system returned it; null for a bare tombstone."
    )

    @property
    def key(self) -> bytes:
        return self.id.encode()

    @property
    def topic(self) -> str:
        return change_topic(self.system, self.entity)

    def to_bytes(self) -> bytes:
        return codec.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "ChangeEvent":
        return cls.model_validate(codec.loads(raw))
