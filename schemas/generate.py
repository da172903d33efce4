"""Generates the JSON Schema files of the topic contracts from their pydantic models.

``python -m schemas.generate`` (or ``make schemas``) rewrites them;
``tests/unit/test_schemas.py`` fails when a checked-in file and its model differ.
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.change import ChangeEvent
from schemas.command import WriteCommand, WriteResult
from schemas.deadletter import DeadLetter
from schemas.decision import Decision

SCHEMA_DIR = Path(__file__).parent

#: file name -> (model, title)
CONTRACTS: dict[str, tuple[type[BaseModel], str]] = {
    "change.v1.schema.json": (ChangeEvent, "talkstream change event (topics <system>.<entity>.changes)"),
    "command.v1.schema.json": (WriteCommand, "talkstream write command (talkstream.<system>.<entity>.commands)"),
    "result.v1.schema.json": (WriteResult, "talkstream write result (talkstream.flow.events)"),
    "deadletter.v1.schema.json": (DeadLetter, "talkstream dead letter (talkstream.deadletters)"),
    "decision.v1.schema.json": (Decision, "talkstream decision record (talkstream.decisions)"),
}


def render(model: type[BaseModel], title: str) -> str:
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "description": title, **schema}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    for name, (model, title) in CONTRACTS.items():
        (SCHEMA_DIR / name).write_text(render(model, title))
        print(f"wrote schemas/{name}")


if __name__ == "__main__":
    main()
