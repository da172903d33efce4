"""Decision records (public topic ``talkstream.decisions``, keyed by link key).

The link stage publishes one for each decision that writes, merges a conflict,
parks, dead-letters or is held by a flow control: when, what triggered it, what
came of it, and per property whose agreed value a side's report touched, the
value before and after and why (one side changed it, a later change won a
conflict, empty never overwrites). ``talkstream explain`` shows a link's recent
decisions; consumers of your own may audit them. A record's first values (the
initial load's creates) carry no property changes.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DECISIONS_TOPIC = "talkstream.decisions"


class PropertyChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    property: str = Field(description="The mapped property (its Customcrm name).")
    side: Literal["customcrm", "businessnxt"] = Field(description="The side whose report was decided on.")
    old: Any = Field(description="The agreed value before.")
    new: Any = Field(description="The agreed value after (equal to old: the report did not win).")
    why: str = Field(description="Why, in words.")


class Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["change", "result", "tick", "redrive"]
    side: str | None = Field(default=None, description="The system of the change or result.")
    version: str | None = Field(default=None, description="The change's record version.")
    op: str | None = Field(default=None, description="The change's op, or the result's write op.")
    status: str | None = Field(default=None, description="The result's status.")


class Write(BaseModel):
    model_config = ConfigDict(extra="forbid")

    system: str
    op: str
    properties: list[str] = Field(default_factory=list, description="The properties it writes, by their Customcrm "
                                  "names (an origin stamp: the Business NXT field).")


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["talkstream.decision/v1"] = Field(default="talkstream.decision/v1", alias="schema")
    at: float = Field(description="When it was decided (epoch seconds).")
    flow: str
    link_key: str
    trigger: Trigger
    outcome: list[str] = Field(description="What happened: create, update:<side>, merge, park, held, deadletter, ...")
    writes: list[Write] = Field(default_factory=list, description="The writes it sent.")
    changes: list[PropertyChange] = Field(default_factory=list)
