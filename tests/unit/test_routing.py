"""Routing of change events to flows and link keys."""
from __future__ import annotations

from schemas.change import ChangeEvent
from streams.mapping import load_mapping
from streams.routing import known_routes, route, stored_routes

MAPPING = load_mapping()


def ev(system, entity, id, data, op="upsert"):
    return ChangeEvent(system=system, entity=entity, id=id, op=op, data=data)


def keys(routes):
    return [(f.id, k) for f, k in routes]


def test_customcrm_order_and_user_route_by_id():
    r, mem = route(MAPPING, ev("customcrm", "order", "ord_1", {"Id": "ord_1"}), None)
    assert keys(r) == [("order-order", "order-order:ord_1")] and mem is None
    r, _ = route(MAPPING, ev("customcrm", "user", "usr_1", {"Id": "usr_1"}), None)
    assert keys(r) == [("user-order", "user-order:usr_1")]


def test_businessnxt_order_belongs_to_the_flow_that_stamped_it():
    r, mem = route(MAPPING, ev("businessnxt", "order", "7", {"orderNo": 7, "information1": "customcrm:user:usr_1"}), None)
    assert keys(r) == [("user-order", "user-order:usr_1")]
    # its delete tombstone has no data: the remembered route is used
    r2, _ = route(MAPPING, ev("businessnxt", "order", "7", None, op="delete"), mem)
    assert keys(r2) == [("user-order", "user-order:usr_1")]


def test_unstamped_businessnxt_order_is_owned_by_no_flow():
    r, mem = route(MAPPING, ev("businessnxt", "order", "8", {"orderNo": 8, "information1": None}), None)
    assert r == [] and mem is None


def test_product_link_key_is_the_first_sku_and_survives_a_sku_change():
    r, mem = route(MAPPING, ev("customcrm", "product", "prd_1", {"Id": "prd_1", "Sku": "SKU-1"}), None)
    assert keys(r) == [("product-product", "product-product:SKU-1")]
    r2, mem2 = route(MAPPING, ev("customcrm", "product", "prd_1", {"Id": "prd_1", "Sku": "SKU-NEW"}), mem)
    assert keys(r2) == [("product-product", "product-product:SKU-1")] and mem2 is None
    r3, _ = route(MAPPING, ev("businessnxt", "product", "SKU-1", {"productNo": "SKU-1"}), None)
    assert keys(r3) == [("product-product", "product-product:SKU-1")]


def test_the_routes_table_stores_the_link_keys_alone_and_reads_earlier_dicts():
    one = {"product-product": "product-product:SKU:1"}
    assert stored_routes(one) == "product-product:SKU:1"  # the key names its flow
    assert known_routes(stored_routes(one)) == one
    two = {"order-order": "order-order:o1", "user-order": "user-order:o1"}
    assert known_routes(stored_routes(two)) == two
    assert known_routes(one) == one  # the dict that earlier versions stored
    assert known_routes(None) is None
    # what the router remembers comes back as it was remembered
    m = load_mapping()
    _, remembered = route(m, ev("customcrm", "product", "p1", {"Id": "p1", "Sku": "SKU-1"}), None)
    assert known_routes(stored_routes(remembered)) == remembered
