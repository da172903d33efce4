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
