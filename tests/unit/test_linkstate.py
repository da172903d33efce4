"""Every key of every link state the decisions leave is declared in ``streams.linkstate``."""
from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from typing import get_type_hints

import pytest

from schemas.command import WriteResult
from streams.engine import Policy
from tests.unit.edge import handle_change, handle_result, handle_tick
from streams.linkstate import InFlight, LinkState, Park, new_link
from tests.unit.test_engine import ORDER, POLICY, REFS, T0, crm_order, linked_order
from tests.unit.test_linkcodec import lifecycle

HELD = replace(POLICY, held_flows=frozenset({"order-order"}))


def more_states() -> dict[str, dict]:
    states = dict(lifecycle())
    link, _ = linked_order()
    states["held"] = handle_change(copy.deepcopy(link), ORDER, crm_order(2, T0 + timedelta(seconds=5), Name="x"),
                                   "order-order:ord_1", now=10, refs=REFS, policy=HELD).link
    deleted = handle_change(copy.deepcopy(link), ORDER, crm_order(2, T0 + timedelta(seconds=6), Deleted=True),
                            "order-order:ord_1", now=10, refs=REFS, policy=HELD)
    states["a delete held"] = deleted.link  # (``delete_pending`` needs a flow that propagates deletes)
    edit = handle_change(copy.deepcopy(link), ORDER, crm_order(2, T0 + timedelta(seconds=10), Name="x"),
                         "order-order:ord_1", now=1, refs=REFS, policy=Policy(write_retry_max=1))
    (cmd,) = edit.commands
    fail = WriteResult(command_id=cmd.command_id, flow=cmd.flow, link_key=cmd.link_key, system=cmd.system,
                       entity=cmd.entity, op="update", status="retryable", target_id="5001", error="HTTP 503")
    states["retrying"] = handle_result(copy.deepcopy(edit.link), ORDER, fail, now=2, refs=REFS,
                                       policy=Policy(write_retry_max=3)).link
    pending = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY)
    (create,) = pending.commands
    refused = WriteResult(command_id=create.command_id, flow=create.flow, link_key=create.link_key,
                          system=create.system, entity=create.entity, op="create", status="permanent",
                          error="HTTP 422")
    states["create refused: blocked"] = handle_result(pending.link, ORDER, refused, now=1, refs=REFS,
                                                      policy=POLICY).link
    states["ticked"] = handle_tick(copy.deepcopy(states["retrying"]), ORDER, now=100, refs=REFS, policy=POLICY).link
    return states


STATES = more_states()


def test_the_scenarios_reach_the_optional_keys():
    seen = {key for link in STATES.values() for key in link}
    assert {"held", "retry_at", "blocked"} <= seen


@pytest.mark.parametrize("name", list(STATES))
def test_every_key_is_declared(name):
    link = STATES[name]
    assert set(link) <= set(get_type_hints(LinkState)), set(link) - set(get_type_hints(LinkState))
    for write in link["inflight"].values():
        assert set(write) <= set(get_type_hints(InFlight))
    if link["park"]:
        assert set(link["park"]) <= set(get_type_hints(Park))


def test_a_new_link_has_every_required_key():
    assert set(new_link("order-order", "order-order:ord_1")) == set(LinkState.__required_keys__)
