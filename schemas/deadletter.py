"""Dead-letter entries (internal topic ``talkstream.deadletters``).

Anything that cannot be processed (schema-invalid record, unparseable payload,
permanent API error, unknown reference past its bound) becomes one entry that
names the record and the reason. Entries can be re-driven.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas import codec
from schemas.change import utcnow

DEADLETTER_TOPIC = "talkstream.deadletters"


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["talkstream.deadletter/v1"] = Field(default="talkstream.deadletter/v1", alias="schema")
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    stage: Literal["poll", "webhook", "flow", "sink"] = Field(description="Where it failed.")
    system: str | None = None
    entity: str | None = None
    record_id: str | None = Field(default=None, description="Id of the record in its system, when known.")
    flow: str | None = None
    link_key: str | None = None
    reason: str = Field(description="Human-readable: what is wrong with which record.")
    error_type: str = Field(description="Machine-readable class, e.g. validation_error, permanent_api_error.")
    payload: Any = Field(default=None, description="The event, command or raw record that failed.")
    attempts: int = 1
    failed_at: datetime = Field(default_factory=utcnow)

    def to_bytes(self) -> bytes:
        return codec.dumps(self.model_dump(mode="json", by_alias=True))

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> "DeadLetter":
        return cls.model_validate(codec.loads(raw))
