"""How link states are stored (streams.linkcodec): exact round trips, fewer bytes, old form readable."""
from __future__ import annotations

import copy
from datetime import timedelta

import orjson
import pytest

from streams import engine, linkcodec
from tests.unit.edge import handle_change, handle_result, handle_tick
from streams.mapping import DictRefResolver
from tests.unit.test_engine import ORDER, POLICY, REFS, T0, bnxt_order, crm_order, linked_order, ok

KEY = "order-order:ord_1"


def lifecycle() -> dict[str, dict]:
    """Link states from each stage of a link's life, as the decisions leave them."""
    states: dict[str, dict] = {}
    pending = handle_change(None, ORDER, crm_order(), KEY, now=0, refs=REFS, policy=POLICY)
    states["pending create"] = pending.link
    linked, t_ack = linked_order()
    states["linked"] = linked
    edited = handle_change(copy.deepcopy(linked), ORDER, bnxt_order(T0 + timedelta(seconds=20), yourReference="PO-2"),
                           KEY, now=8, refs=REFS, policy=POLICY)
    states["edited in Business NXT, write to Customcrm in flight"] = edited.link
    (write,) = edited.commands
    done = handle_result(copy.deepcopy(edited.link), ORDER,
                         ok(write, version="3", record=crm_order(3, T0 + timedelta(seconds=21),
                                                                  YourReference="PO-2").data),
                         now=9, refs=REFS, policy=POLICY)
    states["edit written back"] = done.link
    parked = handle_change(None, ORDER, crm_order(Lines=[{"LineNo": 1, "ProductId": "prd_9", "Quantity": "1",
                                                          "UnitPrice": "1", "Description": None}]),
                           KEY, now=0, refs=DictRefResolver({}), policy=POLICY)
    assert parked.link.get("park")
    states["parked"] = parked.link
    states["parked, ticked"] = handle_tick(copy.deepcopy(parked.link), ORDER, now=5, refs=DictRefResolver({}),
                                           policy=POLICY).link
    deleted = handle_change(copy.deepcopy(linked), ORDER, crm_order(2, T0 + timedelta(seconds=30), Deleted=True),
                            KEY, now=10, refs=REFS, policy=POLICY)
    states["deleted"] = deleted.link
    return states


@pytest.mark.parametrize("stage", list(lifecycle()))
def test_every_stage_of_a_link_round_trips_exactly(stage):
    link = lifecycle()[stage]
    packed = linkcodec.pack(link)
    assert linkcodec.unpack(KEY, packed) == link
    assert linkcodec.pack(linkcodec.unpack(KEY, packed)) == packed  # an unchanged link stores the same bytes


def test_a_settled_link_stores_its_property_hashes_once_and_takes_far_fewer_bytes():
    link, _ = linked_order()
    hashes = link["rep"]["customcrm"]
    assert link["rep"]["businessnxt"] == hashes == link["wrote"]["businessnxt"]  # the repetition it removes
    packed = linkcodec.pack(link)
    for value in hashes.values():
        assert packed.count(value.encode()) == 1
    # one record's values: their time and side once; the acknowledged version is the one seen
    (when,) = {tuple(entry[1:]) for entry in link["base"].values()}
    assert orjson.loads(packed)["bt"] == list(when)
    assert link["acked"]["businessnxt"] == link["seen"]["businessnxt"]
    assert packed.count(link["seen"]["businessnxt"].encode()) == 1
    assert len(packed) < 0.6 * len(orjson.dumps(link))


def test_the_keys_readers_of_the_changelog_use_are_always_stored():
    link, _ = linked_order()
    stored = orjson.loads(linkcodec.pack(link))
    assert (stored["flow"], stored["status"], stored["ids"]) == ("order-order", engine.LINKED,
                                                                 {"customcrm": "ord_1", "businessnxt": "5001"})


def test_sides_that_were_stored_once_come_back_as_separate_dicts():
    link, _ = linked_order()
    back = linkcodec.unpack(KEY, linkcodec.pack(link))
    back["rep"]["businessnxt"]["Name"] = "changed"
    assert back["rep"]["customcrm"]["Name"] == link["rep"]["customcrm"]["Name"]
    assert back["wrote"]["businessnxt"]["Name"] == link["wrote"]["businessnxt"]["Name"]


def test_the_full_form_written_by_earlier_versions_is_read_unchanged():
    for link in lifecycle().values():
        assert linkcodec.unpack(KEY, orjson.dumps(link)) == link


ZDICT = linkcodec.dictionary([(ORDER.id, ORDER.property_names(include_create_only=True)
                               + ["LineNo", "ProductId", "Quantity", "UnitPrice", "Description"])])


@pytest.mark.parametrize("stage", list(lifecycle()))
def test_a_link_held_shrunk_in_memory_expands_to_its_stored_bytes(stage):
    stored = linkcodec.pack(lifecycle()[stage])
    held = linkcodec.shrink(stored, ZDICT)
    assert held[:1] == linkcodec.SHRUNK and stored[:1] == b"{"
    assert linkcodec.expand(held, ZDICT) == stored
    assert linkcodec.expand(stored, ZDICT) is stored  # JSON is held as it is stored


def test_a_settled_link_held_shrunk_takes_a_fraction_of_its_stored_bytes():
    link, _ = linked_order()
    stored = linkcodec.pack(link)
    assert len(linkcodec.shrink(stored, ZDICT)) < 0.5 * len(stored)
    # the preset dictionary is what makes it small
    assert len(linkcodec.shrink(stored, ZDICT)) < len(linkcodec.shrink(stored, b"x"))
