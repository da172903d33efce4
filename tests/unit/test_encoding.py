"""Commands encoded for their system once, in the sink (``streams.encoding``), and what the link
does with a command the sink could not encode (an ``invalid`` result)."""
from __future__ import annotations

from schemas.command import WriteResult
from streams import encoding
from streams.mapping import DictRefResolver
from tests.unit.edge import handle_change, handle_result, handle_tick
from tests.unit.test_engine import MAPPING, ORDER, POLICY, REFS, crm_order, linked_order, sent

KEY = "order-order:ord_1"


def create_command(order=None):
    out = handle_change(None, ORDER, order or crm_order(), KEY, now=0, refs=REFS, policy=POLICY)
    (create,) = out.commands
    return out, create


def test_the_link_sends_canonical_values_and_the_sink_encodes_them_for_the_system():
    _out, create = create_command()
    assert create.values["OrderDate"] == "2026-11-20" and create.data == {}
    ready, refused = encoding.encoded([create], MAPPING.flow, REFS, POLICY.settings)
    assert refused == [] and ready[0].values is None
    assert ready[0].data["orderDate"] == 20261120 and ready[0].data["orderLines"][0]["productNo"] == "SKU-1"
    assert ready[0].data == sent(create)


def test_a_value_the_system_cannot_take_is_an_invalid_result_and_is_not_sent():
    _out, create = create_command(crm_order(Discount="12345678901234567890.25"))
    ready, [result] = encoding.encoded([create], MAPPING.flow, REFS, POLICY.settings)
    assert ready == [] and result.status == "invalid" and "Discount" in result.error
    assert (result.command_id, result.link_key, result.op) == (create.command_id, KEY, "create")


def test_a_product_not_linked_on_this_worker_yet_is_retried():
    _out, create = create_command()
    ready, [result] = encoding.encoded([create], MAPPING.flow, DictRefResolver({}), POLICY.settings)
    assert ready == [] and result.status == "retryable" and "prd_1" in result.error


def test_an_invalid_create_is_dead_lettered_and_blocks_the_link_until_a_redrive():
    out, create = create_command(crm_order(Discount="12345678901234567890.25"))
    _ready, [result] = encoding.encoded([create], MAPPING.flow, REFS, POLICY.settings)
    after = handle_result(out.link, ORDER, result, now=1, refs=REFS, policy=POLICY)
    assert after.commands == [] and after.link["blocked"] and after.link["status"] == "new"
    [entry] = after.deadletters
    assert (entry.stage, entry.error_type, entry.link_key) == ("flow", "validation_error", KEY)
    assert "Discount" in entry.reason and entry.payload["canonical"]["Discount"] == "12345678901234567890.25"


def test_an_invalid_update_is_dead_lettered_and_not_sent_again_until_the_value_changes():
    link, _ = linked_order()
    edit = handle_change(link, ORDER, crm_order(2, Discount="12345678901234567890.25"), KEY, now=5, refs=REFS,
                         policy=POLICY)
    (update,) = edit.commands
    _ready, [result] = encoding.encoded([update], MAPPING.flow, REFS, POLICY.settings)
    after = handle_result(edit.link, ORDER, result, now=6, refs=REFS, policy=POLICY)
    [entry] = after.deadletters
    assert (entry.stage, entry.error_type) == ("flow", "validation_error")
    assert entry.payload == {"changes": {"Discount": "12345678901234567890.25"}}
    assert not after.link.get("blocked") and after.commands == []
    assert isinstance(result, WriteResult)
    assert handle_tick(after.link, ORDER, now=100, refs=REFS, policy=POLICY).commands == []
