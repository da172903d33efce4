"""``streams.explain``: a link state as the changelog stores it, explained."""
from __future__ import annotations

from streams import linkcodec
from streams.engine import h, new_link
from streams.explain import explain_link, links_of, waiting


def _stored(key: str, **changes) -> bytes:
    link = new_link("order-order", key)
    link.update(changes)
    return linkcodec.pack(link)


def test_a_link_is_found_by_either_sides_id_or_its_key():
    states = {
        "order-order:ord_1": _stored("order-order:ord_1", ids={"customcrm": "ord_1", "businessnxt": "7"}),
        "order-order:ord_2": _stored("order-order:ord_2", ids={"customcrm": "ord_2", "businessnxt": None}),
        "order-order:gone": None,
    }
    assert [link["key"] for link in links_of(states, "businessnxt", "7")] == ["order-order:ord_1"]
    assert [link["key"] for link in links_of(states, "customcrm", "ord_2")] == ["order-order:ord_2"]
    assert links_of(states, "customcrm", "ord_3") == []


def test_each_property_says_where_its_value_came_from_and_who_has_it():
    link = linkcodec.unpack("order-order:ord_1", _stored(
        "order-order:ord_1", status="linked", ids={"customcrm": "ord_1", "businessnxt": "7"},
        base={"Name": ["Kari", 1_790_000_000.0, "businessnxt"], "YourReference": ["R1", 1_780_000_000.0, "customcrm"]},
        rep={"customcrm": {"Name": h("Old"), "YourReference": h("R1")},
             "businessnxt": {"Name": h("Kari"), "YourReference": h("R1")}},
        wrote={"customcrm": {"Name": h("Kari")}, "businessnxt": {}}))
    props = {p["property"]: p for p in explain_link(link)["properties"]}
    assert props["Name"]["agreed"] == "Kari" and props["Name"]["from"] == "businessnxt"
    assert props["Name"]["at"] == "2026-09-21T14:13:20Z"
    # Customcrm has not reported the written value yet; nothing was written to Business NXT
    assert props["Name"]["reported"] == {"customcrm": False, "businessnxt": True}
    assert props["Name"]["written"] == {"customcrm": True, "businessnxt": None}


def test_why_a_link_waits_is_said_in_words():
    link = new_link("order-order", "order-order:ord_1")
    assert waiting(link) == []
    link.update(blocked=True, held=True, park={"since": 0.0, "attempts": 2, "missing": ["prd_9"]},
                fail={"customcrm": 0, "businessnxt": 3})
    words = " | ".join(waiting(link))
    assert "blocked" in words and "redrive" in words and "prd_9" in words and "held" in words
    assert "businessnxt 3" in words
