"""The pieces of a flow in the mapping file: its two endpoints, origin stamp, match key and properties."""
from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

Side = Literal["source", "target"]
Direction = Literal["both", "create_only", "to_target"]

# --------------------------------------------------------------------------
# The mapping models
# --------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_Model):
    """One side of a flow: system, entity, and the label used in the docs."""

    system: Literal["customcrm", "businessnxt"]
    entity: str
    label: str


class TargetEndpoint(Endpoint):
    """The Businessnxt side; ``key`` is the primary-key field of the table."""

    key: str


class Origin(_Model):
    """Where the origin stamp goes on the target and its format (with ``{id}``)."""

    field: str
    format: str


class Match(_Model):
    """Natural-key match: a target whose ``target`` equals the source's ``source`` is linked."""

    source: str
    target: str


class Property(_Model):
    """One mapped property (a table row), or a line-item list with ``items``."""

    source: str | None = None
    setting: str | None = None
    target: str
    type: str
    convert: str
    direction: Direction = "both"
    key: str | None = None
    join: str | None = None
    items: list["Property"] | None = None
    minimum: Decimal | None = None
    exclusive_minimum: Decimal | None = None
    note: str | None = None

    @property
    def is_lines(self) -> bool:
        return self.convert == "lines"

    @property
    def create_only(self) -> bool:
        return self.direction == "create_only"
