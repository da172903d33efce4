"""The checked-in JSON Schemas equal what the pydantic models generate, and events round-trip."""
from __future__ import annotations

import pytest

from schemas.change import ChangeEvent
from schemas.generate import CONTRACTS, SCHEMA_DIR, render


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_checked_in_schema_matches_model(name):
    model, title = CONTRACTS[name]
    path = SCHEMA_DIR / name
    assert path.exists(), f"schemas/{name} missing: run `make schemas`"
    assert path.read_text() == render(model, title), f"schemas/{name} is stale: run `make schemas`"


def test_change_event_round_trip_and_key():
    event = ChangeEvent(system="customcrm", entity="order", id="ord_000001", op="upsert", version="2",
                        data={"Id": "ord_000001", "Name": "Ørsted"})
    raw = event.to_bytes()
    assert b'"schema":"talkstream.change/v1"' in raw
    assert ChangeEvent.from_bytes(raw) == event
    assert event.key == b"ord_000001"
    assert event.topic == "customcrm.order.changes"


def test_change_event_rejects_unknown_fields():
    with pytest.raises(Exception):
        ChangeEvent.model_validate({"system": "customcrm", "entity": "order", "id": "x", "op": "upsert",
                                    "surprise": 1})


def _command(n: int):
    from schemas.command import WriteCommand

    return WriteCommand(command_id=f"product-product:P{n}#1", flow="product-product", link_key=f"product-product:P{n}",
                        system="businessnxt", entity="product", op="create", data={"productNo": f"P{n}"})


def test_a_command_batch_carries_its_commands_in_order():
    from schemas.command import WriteCommand, command_members, encode_command_batch

    commands = [_command(n) for n in range(3)]
    members = command_members(encode_command_batch(commands))
    assert [WriteCommand.model_validate(m) for m in members] == commands


def test_a_bare_command_message_is_one_member():
    from schemas.command import WriteCommand, command_members

    command = _command(7)
    assert [WriteCommand.model_validate(m) for m in command_members(command.to_bytes())] == [command]


def test_an_unreadable_command_message_raises():
    import pytest

    from schemas.command import command_members

    with pytest.raises(ValueError):
        command_members(b"{not json")
    with pytest.raises(ValueError):
        command_members(b'{"schema": "talkstream.command-batch/v1", "commands": "none"}')


def test_a_command_has_one_concurrency_field_and_reads_the_old_one():
    from schemas.command import WriteCommand

    base = {"command_id": "c1", "flow": "order-order", "link_key": "order-order:ord_1", "system": "customcrm",
            "entity": "order", "op": "update", "target_id": "ord_1"}
    assert "if_version" not in WriteCommand.model_json_schema()["properties"]
    # a command an earlier talkstream left on its topic
    assert WriteCommand.model_validate({**base, "if_version": 7}).expected_version == "7"
    assert WriteCommand.model_validate({**base, "if_version": None}).expected_version is None
