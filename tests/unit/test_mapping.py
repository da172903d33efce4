"""Unit tests of the dataflow mapping (schemas/mapping.json + streams/mapping.py).

The expected tables are hard-coded from docs/mapping.md on purpose: the
mapping file must not drift from the contract.
"""
from __future__ import annotations

import copy
import json
import pickle
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from streams.docs import render_dataflow_rst, table_rows
from streams.mapping import (
    CONVERTERS,
    DictRefResolver,
    MappingError,
    MissingReferences,
    RefResolver,
    is_empty,
    load_mapping,
    parse_mapping,
)

MAPPING_FILE = Path(__file__).resolve().parents[2] / "schemas" / "mapping.json"

# --- the contract tables (docs/mapping.md), row by row, in order --------

CONTRACT_TABLES = {
    "order-order": [
        ("Name", "name", "String"),
        ("OrderDate", "orderDate", "Int (date yyyymmdd)"),
        ("DueDate", "dueDate", "Int (date yyyymmdd)"),
        ("CustomerNo", "customerNo", "Int"),
        ("YourReference", "yourReference", "String"),
        ("Discount", "totalDiscountAmountInCurrency", "Decimal"),
        ("Lines[].LineNo", "orderLines[].lineNo", "Int"),
        ("Lines[].ProductId", "orderLines[].productNo", "String"),
        ("Lines[].Quantity", "orderLines[].quantity", "Decimal"),
        ("Lines[].UnitPrice", "orderLines[].priceInCurrency", "Decimal"),
        ("Lines[].Description", "orderLines[].description", "String"),
    ],
    "product-product": [
        ("Sku", "productNo", "String"),
        ("Name", "description", "String"),
        ("Description", "information1", "String"),
        ("Price", "priceQuantity", "Decimal"),
        ("StockQuantity", "quantityPerUnit", "Decimal"),
        ("Url", "webPage", "String"),
    ],
    "user-order": [
        ("FullName", "name", "String"),
        ("Email", "yourReference", "String"),
        ("Title", "ourReference", "String"),
        ("CreatedAt", "orderDate", "Int (date yyyymmdd)"),
        ("(setting)", "customerNo", "Int"),
    ],
}

REFS = {"prd_000001": "P-100", "prd_000002": "P-200", "prd_000003": "P-300"}


@pytest.fixture(scope="module")
def mapping():
    return load_mapping()


@pytest.fixture(scope="module")
def order(mapping):
    return mapping.flow("order-order")


@pytest.fixture(scope="module")
def product(mapping):
    return mapping.flow("product-product")


@pytest.fixture(scope="module")
def user(mapping):
    return mapping.flow("user-order")


@pytest.fixture
def refs():
    return DictRefResolver(REFS)


def crm_order(**overrides):
    record = {
        "Id": "ord_000123",
        "CreatedAt": "2026-11-20T09:00:00.000000Z",
        "ModifiedAt": "2026-11-25T10:01:02.123456Z",
        "Version": 3,
        "Deleted": False,
        "Name": "Spring order",
        "CustomerNo": 10001,
        "OrderDate": "2026-11-25",
        "DueDate": None,
        "Discount": "10.50",
        "YourReference": "",
        "Status": "open",
        "Lines": [
            {"LineNo": 2, "ProductId": "prd_000002", "Quantity": "1.000", "UnitPrice": "199.00", "Description": None},
            {"LineNo": 1, "ProductId": "prd_000001", "Quantity": "3", "UnitPrice": "0.10", "Description": "Widget"},
        ],
    }
    record.update(overrides)
    return record


def bnxt_order(**overrides):
    row = {
        "orderNo": 5001,
        "orderDate": 20261125,
        "dueDate": 0,
        "customerNo": 10001,
        "name": "Spring order",
        "yourReference": None,
        "ourReference": "",
        "information1": "customcrm:order:ord_000123",
        "totalDiscountAmountInCurrency": 10.5,
        "createdTimestamp": "2026-11-25T11:01:02.1250000",
        "changedTimestamp": "2026-11-25T11:01:02.1250000",
        "joindown_OrderLine_via_Order": {
            "items": [
                {"orderNo": 5001, "lineNo": 1, "productNo": "P-100", "quantity": 3, "priceInCurrency": 0.1,
                 "description": "Widget"},
                {"orderNo": 5001, "lineNo": 2, "productNo": "P-200", "quantity": 1.0, "priceInCurrency": 199,
                 "description": ""},
            ]
        },
    }
    row.update(overrides)
    return row


def crm_product(**overrides):
    record = {
        "Id": "prd_000001",
        "Sku": "P-100",
        "Name": "Widget",
        "Description": None,
        "Price": "199.00",
        "StockQuantity": "12.5",
        "Url": "https://example.com/widget",
        "Version": 1,
        "Deleted": False,
    }
    record.update(overrides)
    return record


def crm_user(**overrides):
    record = {
        "Id": "usr_000007",
        "CreatedAt": "2026-11-24T23:30:00.000001Z",
        "ModifiedAt": "2026-11-25T10:00:00.000000Z",
        "Version": 1,
        "Deleted": False,
        "FullName": "Kari Nordmann",
        "Email": "kari@example.com",
        "Phone": None,
        "Title": "CFO",
        "Active": True,
    }
    record.update(overrides)
    return record


# --- the file and its tables ----------------------------------------------


def test_default_mapping_loads_from_package_data_and_matches_the_file(mapping):
    assert [f.id for f in mapping.flows] == ["order-order", "product-product", "user-order"]
    assert load_mapping(MAPPING_FILE) == mapping


@pytest.mark.parametrize("flow_id", list(CONTRACT_TABLES))
def test_flow_rows_equal_the_contract_table(mapping, flow_id):
    rows = [(r.source, r.target, r.type) for r in table_rows(mapping.flow(flow_id))]
    assert rows == CONTRACT_TABLES[flow_id]


def test_flow_settings_follow_the_contract(order, product, user):
    assert order.origin.field == "information1" and order.origin.format == "customcrm:order:{id}"
    assert user.origin.field == "information1" and user.origin.format == "customcrm:user:{id}"
    assert order.match is None and user.match is None
    assert product.match.source == "Sku" and product.match.target == "productNo"
    assert product.property_by_name("Sku").direction == "create_only"
    assert user.property_by_name("CreatedAt").direction == "create_only"
    for flow in (order, product, user):
        assert flow.create_in_source is False
        assert flow.on_delete == "ignore"
        assert flow.empty_never_overwrites is True
        assert flow.source.system == "customcrm" and flow.target.system == "businessnxt"
    assert (order.target.key, product.target.key, user.target.key) == ("orderNo", "productNo", "orderNo")


def test_flows_for_finds_both_sides(mapping):
    assert [f.id for f in mapping.flows_for("businessnxt", "order")] == ["order-order", "user-order"]
    assert [f.id for f in mapping.flows_for("customcrm", "user")] == ["user-order"]
    assert [f.id for f in mapping.flows_for("businessnxt", "product")] == ["product-product"]
    assert mapping.flows_for("customcrm", "invoice") == []
    with pytest.raises(KeyError, match="nope"):
        mapping.flow("nope")


def test_property_names(order, product, user):
    assert order.property_names() == ["Name", "OrderDate", "DueDate", "CustomerNo", "YourReference", "Discount", "Lines"]
    assert product.property_names() == ["Name", "Description", "Price", "StockQuantity", "Url"]
    assert product.property_names(include_create_only=True)[0] == "Sku"
    assert user.property_names() == ["FullName", "Email", "Title"]
    assert user.property_names(include_create_only=True) == ["FullName", "Email", "Title", "CreatedAt"]


def test_target_fields_for_connector_selection(order, product):
    assert order.target_fields() == [
        "orderNo", "information1", "name", "orderDate", "dueDate", "customerNo", "yourReference",
        "totalDiscountAmountInCurrency",
    ]
    assert order.line_fields() == ["lineNo", "productNo", "quantity", "priceInCurrency", "description"]
    assert product.target_fields()[0] == "productNo" and product.line_fields() == []


# --- canonical form and round trips -------------------------------------------


EXPECTED_ORDER_CANONICAL = {
    "Name": "Spring order",
    "OrderDate": "2026-11-25",
    "DueDate": None,
    "CustomerNo": 10001,
    "YourReference": None,
    "Discount": "10.5",
    "Lines": [
        {"LineNo": 1, "ProductId": "prd_000001", "Quantity": "3", "UnitPrice": "0.1", "Description": "Widget"},
        {"LineNo": 2, "ProductId": "prd_000002", "Quantity": "1", "UnitPrice": "199", "Description": None},
    ],
}


def test_order_source_to_canonical(order):
    assert order.to_canonical("source", crm_order()) == EXPECTED_ORDER_CANONICAL


def test_order_target_to_canonical_reads_both_line_shapes(order, refs):
    assert order.to_canonical("target", bnxt_order(), refs=refs) == EXPECTED_ORDER_CANONICAL
    row = bnxt_order()
    row["orderLines"] = row.pop("joindown_OrderLine_via_Order")["items"]
    assert order.to_canonical("target", row, refs=refs) == EXPECTED_ORDER_CANONICAL


def test_order_round_trip_source_canonical_target_canonical(order, refs):
    canonical = order.to_canonical("source", crm_order())
    data = order.to_target_data(canonical, create=True, refs=refs, source_id="ord_000123")
    assert data == {
        "name": "Spring order",
        "orderDate": 20261125,
        "dueDate": 0,
        "customerNo": 10001,
        "yourReference": None,
        "totalDiscountAmountInCurrency": 10.5,
        "orderLines": [
            {"lineNo": 1, "productNo": "P-100", "quantity": 3, "priceInCurrency": 0.1, "description": "Widget"},
            {"lineNo": 2, "productNo": "P-200", "quantity": 1, "priceInCurrency": 199, "description": None},
        ],
        "information1": "customcrm:order:ord_000123",
    }
    # what Businessnxt stores and returns reads back to the same canonical dict
    wire = orjson.loads(orjson.dumps(data))
    assert order.to_canonical("target", wire, refs=refs) == canonical
    # and back to Customcrm: the body reads as the same canonical value
    body = order.to_source_data(canonical)
    assert body["Discount"] == "10.5" and body["Lines"][1]["UnitPrice"] == "199"
    assert order.to_canonical("source", body) == canonical


def test_product_round_trip(product):
    canonical = product.to_canonical("source", crm_product(), include_create_only=True)
    assert canonical == {
        "Sku": "P-100",
        "Name": "Widget",
        "Description": None,
        "Price": "199",
        "StockQuantity": "12.5",
        "Url": "https://example.com/widget",
    }
    data = product.to_target_data(canonical, create=True)
    assert data == {
        "productNo": "P-100",
        "description": "Widget",
        "information1": None,
        "priceQuantity": 199,
        "quantityPerUnit": 12.5,
        "webPage": "https://example.com/widget",
    }
    assert product.to_canonical("target", data, include_create_only=True) == canonical
    assert product.to_canonical("source", product.to_source_data(canonical, create=True), include_create_only=True) == canonical


def test_user_round_trip(user):
    canonical = user.to_canonical("source", crm_user(), include_create_only=True)
    # 23:30 UTC on the 24th is the 24th (date part in UTC, not local time)
    assert canonical == {"FullName": "Kari Nordmann", "Email": "kari@example.com", "Title": "CFO", "CreatedAt": "2026-11-24"}
    data = user.to_target_data(canonical, create=True, settings={"internal_customer_no": 10000}, source_id="usr_000007")
    assert data == {
        "name": "Kari Nordmann",
        "yourReference": "kari@example.com",
        "ourReference": "CFO",
        "orderDate": 20261124,
        "customerNo": 10000,
        "information1": "customcrm:user:usr_000007",
    }
    assert user.to_canonical("target", data, include_create_only=True) == canonical
    assert user.to_canonical("target", data) == {"FullName": "Kari Nordmann", "Email": "kari@example.com", "Title": "CFO"}
    # CreatedAt is read-only in Customcrm: never in a Customcrm body
    assert user.to_source_data(canonical) == {"FullName": "Kari Nordmann", "Email": "kari@example.com", "Title": "CFO"}
    assert "CreatedAt" not in user.to_source_data(canonical, create=True)


def test_created_at_with_offset_uses_utc_date(user):
    canonical = user.to_canonical("source", crm_user(CreatedAt="2026-11-25T00:30:00+02:00"), include_create_only=True)
    assert canonical["CreatedAt"] == "2026-11-24"


def test_absent_fields_are_left_out_not_cleared(order, refs):
    row = bnxt_order()
    del row["joindown_OrderLine_via_Order"]
    del row["dueDate"]
    canonical = order.to_canonical("target", row, refs=refs)
    assert "Lines" not in canonical and "DueDate" not in canonical
    assert order.to_canonical("source", {"Name": "x"}) == {"Name": "x"}
    # present but null lines are an empty list
    assert order.to_canonical("source", {"Lines": None}) == {"Lines": []}


# --- normalisation ------------------------------------------------------------


@pytest.mark.parametrize("raw", ["199.00", 199, "199", 199.0, Decimal("199.000"), "1.99E2", " 199 "])
def test_decimals_compare_by_value(product, raw):
    assert product.to_canonical("source", {"Price": raw})["Price"] == "199"
    assert product.to_canonical("target", {"priceQuantity": raw})["Price"] == "199"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("1.50", "1.5"), (0, "0"), ("0.00", "0"), ("-0", "0"), ("100", "100"), ("1E+3", "1000"),
     ("0.000001", "0.000001"), (0.1, "0.1"), ("12345678901234567890.25", "12345678901234567890.25")],
)
def test_decimal_canonical_text(product, raw, canonical):
    assert product.to_canonical("source", {"StockQuantity": raw})["StockQuantity"] == canonical


def test_none_and_empty_string_are_equal(product, order):
    a = product.to_canonical("source", crm_product(Description=""))
    b = product.to_canonical("source", crm_product(Description=None))
    assert a == b and a["Description"] is None
    assert product.changed_properties({"Description": ""}, {"Description": None}) == []
    assert order.changed_properties({"Discount": "199.00"}, {"Discount": 199}) == []
    assert order.changed_properties({"Discount": "199.00", "Name": "a"}, {"Discount": "199.01", "Name": "a"}) == ["Discount"]


@pytest.mark.parametrize(("raw", "iso"), [(20261125, "2026-11-25"), (20240229, "2024-02-29"), (0, None), (None, None)])
def test_date_int_to_iso(order, raw, iso):
    assert order.to_canonical("target", {"dueDate": raw})["DueDate"] == iso
    assert order.to_target_data({"DueDate": iso}, create=False) == {"dueDate": raw or 0}


def test_changed_properties(order):
    base = order.to_canonical("source", crm_order())
    edited = order.to_canonical("source", crm_order(Name="Autumn order", Discount="10.500"))
    assert order.changed_properties(base, edited) == ["Name"]
    lines = copy.deepcopy(crm_order()["Lines"])
    lines[0]["Quantity"] = "2"
    edited = order.to_canonical("source", crm_order(Lines=lines))
    assert order.changed_properties(base, edited) == ["Lines"]
    # same lines in another order are not a change
    assert order.changed_properties(base, {"Lines": list(reversed(base["Lines"]))}) == []
    # absent means unknown, unless asked otherwise
    assert order.changed_properties(base, {"Name": base["Name"]}) == []
    assert "DueDate" not in order.changed_properties(base, {"Name": "x"}, missing_is_none=True)
    assert order.changed_properties(base, {"Name": "x"}, missing_is_none=True)[0] == "Name"
    assert "Discount" in order.changed_properties(base, {}, missing_is_none=True)


def test_is_empty():
    assert all(is_empty(v) for v in (None, "", [], {}))
    assert not any(is_empty(v) for v in ("0", 0, False, " ", [{}]))


# --- create-only properties and settings ----------------------------------------


def test_create_only_properties_only_when_creating(product, user):
    canonical = product.to_canonical("source", crm_product(), include_create_only=True)
    assert "productNo" in product.to_target_data(canonical, create=True)
    update = product.to_target_data(canonical, create=False)
    assert "productNo" not in update and update["description"] == "Widget"
    assert "Sku" not in product.to_canonical("source", crm_product())
    assert "Sku" not in product.to_source_data(canonical)
    assert product.to_source_data(canonical, create=True)["Sku"] == "P-100"

    canonical = user.to_canonical("source", crm_user(), include_create_only=True)
    update = user.to_target_data(canonical, create=False, settings={"internal_customer_no": 10000})
    assert update == {"name": "Kari Nordmann", "yourReference": "kari@example.com", "ourReference": "CFO"}


def test_updates_carry_only_present_properties(order):
    assert order.to_target_data({"Name": "x", "Discount": "5.00"}, create=False) == {
        "name": "x", "totalDiscountAmountInCurrency": 5}
    assert order.to_source_data({"Discount": 5, "DueDate": None}) == {"DueDate": None, "Discount": "5"}


def test_settings_from_dict_or_object(user):
    class Settings:
        internal_customer_no = 10042

    assert user.to_target_data({}, create=True, settings=Settings())["customerNo"] == 10042
    assert user.to_target_data({}, create=True, settings={"internal_customer_no": "10001"})["customerNo"] == 10001
    with pytest.raises(MappingError, match="internal_customer_no"):
        user.to_target_data({}, create=True, settings={})
    with pytest.raises(MappingError, match="internal_customer_no"):
        user.to_target_data({}, create=True)


# --- product references ---------------------------------------------------------


def test_dict_ref_resolver_both_ways(refs):
    assert isinstance(refs, RefResolver)
    assert refs.to_target("prd_000002") == "P-200" and refs.to_source("P-200") == "prd_000002"
    assert refs.to_target("prd_x") is None and refs.to_source("P-x") is None


def test_missing_references_to_target_lists_every_missing_id(order):
    lines = [
        {"LineNo": 1, "ProductId": "prd_000001", "Quantity": "1", "UnitPrice": "1", "Description": None},
        {"LineNo": 2, "ProductId": "prd_missing_a", "Quantity": "1", "UnitPrice": "1", "Description": None},
        {"LineNo": 3, "ProductId": "prd_missing_b", "Quantity": "1", "UnitPrice": "1", "Description": None},
        {"LineNo": 4, "ProductId": "prd_missing_a", "Quantity": "2", "UnitPrice": "1", "Description": None},
    ]
    canonical = order.to_canonical("source", crm_order(Lines=lines))
    with pytest.raises(MissingReferences) as info:
        order.to_target_data(canonical, create=True, refs=DictRefResolver({"prd_000001": "P-100"}))
    assert info.value.ids == ["prd_missing_a", "prd_missing_b"]
    assert "prd_missing_a" in str(info.value) and "prd_missing_b" in str(info.value)
    assert "order-order" in str(info.value)


def test_missing_references_from_target_lists_product_numbers(order):
    row = bnxt_order()
    row["joindown_OrderLine_via_Order"]["items"][0]["productNo"] = "P-NEW-1"
    row["joindown_OrderLine_via_Order"]["items"][1]["productNo"] = "P-NEW-2"
    with pytest.raises(MissingReferences) as info:
        order.to_canonical("target", row, refs=DictRefResolver(REFS))
    assert info.value.ids == ["P-NEW-1", "P-NEW-2"]
    assert "productNo" in str(info.value)
    restored = pickle.loads(pickle.dumps(info.value))
    assert restored.ids == info.value.ids and str(restored) == str(info.value)


def test_product_refs_need_a_resolver_on_the_target_side(order):
    with pytest.raises(TypeError, match="RefResolver"):
        order.to_canonical("target", bnxt_order())
    # a Customcrm order needs none: its product ids are already canonical
    order.to_canonical("source", crm_order())


# --- invalid values ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "path", "reason", "value"),
    [
        ({"Lines": [{"LineNo": 1, "ProductId": "p", "Quantity": "1", "UnitPrice": "1"},
                    {"LineNo": 2, "ProductId": "p", "Quantity": "1", "UnitPrice": "1"},
                    {"LineNo": 3, "ProductId": "p", "Quantity": "-2", "UnitPrice": "1"}]},
         "Lines[2].Quantity", "greater than 0", "-2"),
        ({"Lines": [{"LineNo": 1, "ProductId": "p", "Quantity": "0", "UnitPrice": "1"}]},
         "Lines[0].Quantity", "greater than 0", "0"),
        ({"Lines": [{"LineNo": 1, "ProductId": "p", "Quantity": "lots", "UnitPrice": "1"}]},
         "Lines[0].Quantity", "not a decimal number", "lots"),
        ({"Lines": [{"LineNo": 1, "ProductId": "p", "Quantity": "1", "UnitPrice": "cheap"}]},
         "Lines[0].UnitPrice", "not a decimal number", "cheap"),
        ({"Lines": [{"LineNo": 0, "ProductId": "p", "Quantity": "1", "UnitPrice": "1"}]},
         "Lines[0].LineNo", "at least 1", 0),
        ({"OrderDate": "2026-02-30"}, "OrderDate", "not a valid date", "2026-02-30"),
        ({"OrderDate": "25.11.2026"}, "OrderDate", "expected a date YYYY-MM-DD", "25.11.2026"),
        ({"Discount": "-1"}, "Discount", "at least 0", "-1"),
        ({"Discount": "NaN"}, "Discount", "finite", "NaN"),
        ({"CustomerNo": "abc"}, "CustomerNo", "expected an integer", "abc"),
        ({"Name": 42}, "Name", "expected a string", 42),
    ],
)
def test_invalid_source_values_name_flow_property_and_value(order, record, path, reason, value):
    with pytest.raises(MappingError) as info:
        order.to_canonical("source", record)
    err = info.value
    assert (err.flow, err.path, err.value) == ("order-order", path, value)
    assert reason in err.reason
    text = str(err)
    assert "order-order" in text and path in text and repr(value) in text and reason in text


def test_invalid_target_values_name_both_field_names(order, product):
    with pytest.raises(MappingError) as info:
        order.to_canonical("target", {"orderDate": 20261332})
    assert info.value.path == "OrderDate" and "orderDate" in str(info.value) and "20261332" in str(info.value)
    with pytest.raises(MappingError) as info:
        product.to_canonical("target", {"priceQuantity": "n/a"})
    assert info.value.flow == "product-product" and "Price" in str(info.value) and "priceQuantity" in str(info.value)
    row = bnxt_order()
    row["joindown_OrderLine_via_Order"]["items"][1]["quantity"] = -1
    with pytest.raises(MappingError) as info:
        order.to_canonical("target", row, refs=DictRefResolver(REFS))
    assert info.value.path == "Lines[1].Quantity" and "orderLines[1].quantity" in str(info.value)


def test_duplicate_or_missing_line_numbers(order):
    line = {"ProductId": "p", "Quantity": "1", "UnitPrice": "1"}
    with pytest.raises(MappingError, match="duplicate line key"):
        order.to_canonical("source", {"Lines": [{"LineNo": 1, **line}, {"LineNo": 1, **line}]})
    with pytest.raises(MappingError, match=r"Lines\[0\]\.LineNo"):
        order.to_canonical("source", {"Lines": [{"LineNo": None, **line}]})


def test_invalid_canonical_values_fail_on_write(order, product):
    with pytest.raises(MappingError, match="OrderDate"):
        order.to_target_data({"OrderDate": "yesterday"}, create=False)
    with pytest.raises(MappingError, match="Price"):
        product.to_source_data({"Price": "free"})
    # more significant digits than a JSON number carries exactly: refuse, never round
    with pytest.raises(MappingError, match="exactly"):
        product.to_target_data({"Price": "12345678901234567890.25"}, create=False)


def test_mapping_error_pickles():
    err = MappingError("bad", flow="f", path="Lines[1].Quantity", value="-1")
    restored = pickle.loads(pickle.dumps(err))
    assert str(restored) == str(err) and restored.path == err.path and restored.value == "-1"


# --- origin stamps, ids and match keys -------------------------------------------------


def test_origin_stamps(order, user, product):
    assert order.origin_stamp("ord_000123") == "customcrm:order:ord_000123"
    assert order.parse_origin("customcrm:order:ord_000123") == "ord_000123"
    assert order.parse_origin("customcrm:user:usr_1") is None
    assert user.parse_origin("customcrm:user:usr_1") == "usr_1"
    for stamp in (None, "", "customcrm:order:", "something else", 42):
        assert order.parse_origin(stamp) is None
    assert product.origin is None and product.parse_origin("customcrm:order:x") is None
    with pytest.raises(MappingError):
        product.origin_stamp("prd_1")


def test_target_id_and_match_value(order, product):
    assert order.target_id({"orderNo": 5001}) == "5001"
    assert order.target_id({}) is None
    assert product.match_value("source", crm_product()) == "P-100"
    assert product.match_value("target", {"productNo": "P-100"}) == "P-100"
    assert order.match_value("source", crm_order()) is None


# --- canonical form ----------------------------------------------------------------------


def test_canonical_form_is_equal_across_formatting(order, refs):
    a = order.to_canonical("source", crm_order())
    b = order.to_canonical("target", bnxt_order(), refs=refs)
    c = order.to_canonical("source", crm_order(Discount="10.5000", YourReference=None, Lines=list(reversed(crm_order()["Lines"]))))
    assert a == b == c
    d = order.to_canonical("source", crm_order(Discount="10.51"))
    assert d != a and order.changed_properties(a, d) == ["Discount"]


# --- validation of the mapping file ------------------------------------------------------------


def _raw():
    return json.loads(MAPPING_FILE.read_text("utf-8"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["flows"][0]["properties"][0].update(convert="uppercase"), "unknown converter 'uppercase'"),
        (lambda m: m["flows"].append(copy.deepcopy(m["flows"][0])), "duplicate flow id"),
        (lambda m: m["flows"][0].update(id="orders:v2"), "cannot contain ':'"),
        (lambda m: m["flows"][1]["properties"][1].update(source="Sku"), "duplicate source property"),
        (lambda m: m["flows"][0]["properties"][0].update(colour="red"), "colour"),
        (lambda m: m["flows"][0]["properties"][0].update(direction="sideways"), "direction"),
        (lambda m: m["flows"][1]["match"].update(source="Nope"), "match source"),
        (lambda m: m["flows"][0]["origin"].update(format="customcrm:order"), "{id}"),
        (lambda m: m["flows"][0].update(title="Orders"), "title"),
        (lambda m: m["flows"][0]["properties"][6].update(key="Nope"), "key"),
        (lambda m: m["flows"][2]["properties"][4].update(direction="both"), "create_only"),
        (lambda m: m["flows"][2]["properties"][3].update(direction="both"), "cannot write Customcrm"),
        (lambda m: m["flows"][0]["properties"][0].update(minimum=1), "bounds"),
        (lambda m: m.update(version=2), "version"),
    ],
)
def test_invalid_mapping_files_are_rejected_clearly(tmp_path, mutate, message):
    raw = _raw()
    mutate(raw)
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(raw), "utf-8")
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_invalid_json_is_rejected(tmp_path):
    path = tmp_path / "mapping.json"
    path.write_text("{not json", "utf-8")
    with pytest.raises(MappingError, match="not valid JSON"):
        load_mapping(path)


def test_converter_names():
    assert set(CONVERTERS) == {"string", "int", "decimal", "date_int", "datetime_date_int", "lines", "product_ref", "bool"}


# --- adding a property is a one-line change of the file ---------------------------------------------


def test_adding_a_property_needs_no_code_change(tmp_path):
    text = MAPPING_FILE.read_text("utf-8")
    anchor = '        {"source": "Url", "target": "webPage", "type": "String", "convert": "string"}\n'
    assert anchor in text
    added = '        {"source": "Active", "target": "blocked", "type": "Bool", "convert": "bool"},\n'
    path = tmp_path / "mapping.json"
    path.write_text(text.replace(anchor, added + anchor), "utf-8")  # one added line
    flow = load_mapping(path).flow("product-product")

    assert flow.property_names() == ["Name", "Description", "Price", "StockQuantity", "Active", "Url"]
    canonical = flow.to_canonical("source", crm_product(Active=True))
    assert canonical["Active"] is True
    assert flow.to_target_data(canonical, create=False)["blocked"] is True
    assert flow.to_canonical("target", {"blocked": 1}) == {"Active": True}
    assert flow.changed_properties(canonical, {**canonical, "Active": False}) == ["Active"]
    assert flow.to_source_data({"Active": False}) == {"Active": False}
    assert "blocked" in flow.target_fields()

    doc = render_dataflow_rst(load_mapping(path), datetime(2026, 11, 25, tzinfo=timezone.utc))
    assert "   * - Active\n     - blocked\n     - Bool\n" in doc


def test_parse_mapping_accepts_plain_data():
    assert parse_mapping(_raw()) == load_mapping()


def test_to_target_direction_is_never_written_back(tmp_path):
    raw = _raw()
    url = next(p for p in raw["flows"][1]["properties"] if p["source"] == "Url")
    url["direction"] = "to_target"
    flow = parse_mapping(raw).flow("product-product")
    canonical = flow.to_canonical("source", crm_product(), include_create_only=True)
    assert flow.to_target_data(canonical, create=False)["webPage"] == "https://example.com/widget"
    assert flow.to_target_data(canonical, create=True)["webPage"] == "https://example.com/widget"
    assert "Url" not in flow.to_source_data(canonical)
    assert "Url" not in flow.to_source_data(canonical, create=True)
    assert flow.to_canonical("target", {"webPage": "x"}) == {"Url": "x"}
    assert flow.syncs_back("Url") is False and flow.syncs_back("Name") is True
    assert "to Businessnxt only" in next(r for r in table_rows(flow) if r.source == "Url").notes


def test_create_in_source_needs_an_origin_stamp_and_one_flow_per_entity():
    data = json.loads(MAPPING_FILE.read_text())
    flows = {flow["id"]: flow for flow in data["flows"]}
    flows["product-product"]["create_in_source"] = True
    with pytest.raises(MappingError, match="create_in_source needs an origin stamp"):
        parse_mapping(data)
    flows["product-product"]["create_in_source"] = False
    flows["order-order"]["create_in_source"] = flows["user-order"]["create_in_source"] = True
    with pytest.raises(MappingError, match="at most one flow per Business NXT entity"):
        parse_mapping(data)
    flows["user-order"]["create_in_source"] = False
    assert parse_mapping(data).flow("order-order").create_in_source is True
