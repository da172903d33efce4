"""create_in_source (streams.routing, streams.engine): a Business NXT order that no flow links
gets its own link, which creates the Customcrm order once (an Idempotency-Key from the Business
NXT company and key), stamps the Business NXT order with the new id, and moves: from then on the
pair is an ordinary link. A new Customcrm order waits a grace period before its Business NXT
create, so a Customcrm order a Business NXT order just made is found by its stamp."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from schemas.change import ChangeEvent
from streams import engine
from tests.unit.edge import handle_change, handle_result, handle_tick
from streams.mapping import parse_mapping
from streams.linkkeys import is_target_origin, target_origin_key
from streams.routing import route
from tests.unit.test_engine import MAPPING, POLICY, REFS, T0, bnxt_order, crm_order, ok, sent
from tests.unit.test_mapping import MAPPING_FILE

import json

DATA = json.loads(MAPPING_FILE.read_text())
next(f for f in DATA["flows"] if f["id"] == "order-order")["create_in_source"] = True
CREATING = parse_mapping(DATA)
ORDER = CREATING.flow("order-order")
SETTINGS = {"internal_customer_no": 10000, "businessnxt_company": 7}
POLICY_C = replace(POLICY, settings=SETTINGS)


def unstamped(at=T0, **over):
    event = bnxt_order(at, information1=None, **over)
    return event


def test_an_unstamped_row_gets_its_own_link_only_where_the_flow_creates_in_source():
    event = unstamped()
    routes, remembered = route(CREATING, event, None)
    assert [(f.id, key) for f, key in routes] == [("order-order", target_origin_key("order-order", "5001"))]
    assert is_target_origin(routes[0][1]) and remembered == {"order-order": routes[0][1]}
    assert route(MAPPING, event, None)[0] == []  # the default: not copied
    user_stamped = bnxt_order(T0, information1="customcrm:user:usr_1")  # another flow's row: never
    assert [(f.id, key) for f, key in route(CREATING, user_stamped, None)[0]] == [("user-order", "user-order:usr_1")]
    stamped = bnxt_order(T0, information1="customcrm:order:ord_9")  # once stamped: by its stamp
    assert [key for _f, key in route(CREATING, stamped, {"order-order": routes[0][1]})[0]] == ["order-order:ord_9"]


def test_the_row_creates_its_customcrm_order_once_stamps_it_and_moves():
    key = target_origin_key("order-order", "5001")
    out = handle_change(None, ORDER, unstamped(), key, now=0, refs=REFS, policy=POLICY_C)
    (create,) = out.commands
    assert (create.system, create.op) == ("customcrm", "create")
    assert create.idempotency_key == "businessnxt:7:order:5001"
    assert sent(create)["Name"] == "First order" and sent(create)["Lines"][0]["ProductId"] == "prd_1"
    again = handle_change(out.link, ORDER, unstamped(), key, now=1, refs=REFS, policy=POLICY_C)
    assert again.commands == []  # re-delivered: no second create
    record = {**crm_order().data, "Id": "ord_77"}
    made = handle_result(out.link, ORDER, ok(create, version="1", record=record, target_id="ord_77"), now=2,
                         refs=REFS, policy=POLICY_C)
    (stamp,) = made.commands
    assert (stamp.system, stamp.op, sent(stamp)) == ("businessnxt", "update", {"information1": "customcrm:order:ord_77"})
    moved = handle_result(made.link, ORDER, ok(stamp, version=(T0 + timedelta(seconds=3)).isoformat(), record=None),
                          now=3, refs=REFS, policy=POLICY_C)
    assert moved.commands == [] and moved.link["status"] == engine.MOVED
    late = handle_change(moved.link, ORDER, unstamped(T0 + timedelta(seconds=9), name="late"), key, now=4,
                         refs=REFS, policy=POLICY_C)
    assert late.commands == [] and "skip:moved" in late.actions
    assert engine.wake_plan(moved.link, POLICY_C) is None


def test_a_lost_create_result_is_sent_again_with_the_same_key():
    key = target_origin_key("order-order", "5001")
    out = handle_change(None, ORDER, unstamped(), key, now=0, refs=REFS, policy=POLICY_C)
    (first,) = out.commands
    retried = handle_tick(out.link, ORDER, now=POLICY_C.ack_timeout + 1, refs=REFS, policy=POLICY_C)
    (second,) = retried.commands
    assert second.op == "create" and second.idempotency_key == first.idempotency_key


def test_a_new_customcrm_order_waits_the_grace_then_creates():
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY_C)
    assert out.commands == [] and out.wake_at == POLICY_C.create_grace
    early = handle_tick(out.link, ORDER, now=1, refs=REFS, policy=POLICY_C)
    assert early.commands == []
    later = handle_tick(out.link, ORDER, now=POLICY_C.create_grace, refs=REFS, policy=POLICY_C)
    assert [c.op for c in later.commands] == ["create"]


def test_a_stamped_row_seen_first_links_without_any_create():
    stamped = bnxt_order(T0, information1="customcrm:order:ord_1")
    out = handle_change(None, ORDER, stamped, "order-order:ord_1", now=0, refs=REFS, policy=POLICY_C)
    assert out.commands == []
    linked = handle_change(out.link, ORDER, crm_order(), "order-order:ord_1", now=1, refs=REFS, policy=POLICY_C)
    assert linked.link["status"] == engine.LINKED and linked.commands == []


def test_the_grace_counts_again_from_when_the_worker_took_its_partitions():
    """After a crash, the Business NXT record's own link sends its lost create again within one
    result timeout: a Customcrm record first seen before the crash still waits a full grace."""
    out = handle_change(None, ORDER, crm_order(), "order-order:ord_1", now=0, refs=REFS, policy=POLICY_C)
    restarted = replace(POLICY_C, recovered_at=100.0)
    waiting = handle_tick(out.link, ORDER, now=101, refs=REFS, policy=restarted)
    assert waiting.commands == [] and waiting.wake_at == 100.0 + POLICY_C.create_grace
    done = handle_tick(waiting.link, ORDER, now=100.0 + POLICY_C.create_grace, refs=REFS, policy=restarted)
    assert [c.op for c in done.commands] == ["create"]
