"""Public topic contracts of talkstream: the pydantic models of every message
that crosses a Kafka topic, their JSON Schema files (generated, checked in),
and the dataflow mapping file.

Downstream consumers depend on these; change them only with a new schema
version.
"""
from schemas.change import ChangeEvent, change_topic, CHANGE_SCHEMA
from schemas.command import WriteCommand, WriteResult, command_topic, ack_topic

__all__ = [
    "ChangeEvent",
    "change_topic",
    "CHANGE_SCHEMA",
    "WriteCommand",
    "WriteResult",
    "command_topic",
    "ack_topic",
]
