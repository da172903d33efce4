"""Contract tests: the running Customcrm sandbox serves docs/contracts/customcrm-api.md to the letter."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import httpx
import pytest

from tests.integration.customcrm.conftest import TOKEN

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@pytest.fixture
def http(sandbox):
    with httpx.Client(base_url=sandbox.url, headers=AUTH, timeout=10) as c:
        yield c


def error_of(resp: httpx.Response, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def product(http, sku="SKU-1", **kw) -> dict:
    r = http.post("/api/v1/products", json={"Sku": sku, "Name": f"Product {sku}", "Price": "10.00", **kw})
    assert r.status_code == 201, r.text
    return r.json()


def test_401_without_or_with_wrong_token(sandbox):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        for method, path in (("GET", "/api/v1/orders"), ("POST", "/api/v1/users"),
                             ("GET", "/api/v1/orders/ord_000001"), ("POST", "/api/v1/orders/bulk")):
            r = httpx.request(method, sandbox.url + path, headers=headers, json={})
            error_of(r, 401, "unauthorized")


def test_create_sets_server_fields_and_ignores_read_only(http):
    r = http.post("/api/v1/products", json={
        "Sku": "A-1", "Name": "Widget", "Price": "199.00", "Id": "mine", "Version": 99, "Deleted": True,
        "CreatedAt": "2000-01-01T00:00:00.000000Z",
    })
    assert r.status_code == 201
    rec = r.json()
    assert rec["Id"].startswith("prd_") and rec["Id"] != "mine"
    assert rec["Version"] == 1 and rec["Deleted"] is False
    assert TS.match(rec["CreatedAt"]) and rec["CreatedAt"] == rec["ModifiedAt"]
    assert rec["Price"] == "199.00" and rec["Description"] is None and rec["Url"] is None
    assert http.get(f"/api/v1/products/{rec['Id']}").json() == rec


def test_each_resource_round_trips(http):
    p = product(http)
    order = {"Name": "O", "CustomerNo": 10001, "OrderDate": "2026-11-25", "DueDate": None, "Discount": "5",
             "YourReference": "ref", "Status": "won",
             "Lines": [{"LineNo": 1, "ProductId": p["Id"], "Quantity": "2", "UnitPrice": "10.50",
                        "Description": None}]}
    r = http.post("/api/v1/orders", json=order)
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in order} == order
    r = http.post("/api/v1/users", json={"FullName": "Ada", "Email": "ada@example.com"})
    assert r.status_code == 201
    assert r.json()["Active"] is True and r.json()["Id"].startswith("usr_")


def test_422_validation_with_fields(http):
    r = http.post("/api/v1/products", json={"Name": "", "Price": "-1", "Bogus": 1})
    err = error_of(r, 422, "validation_error")
    assert set(err["fields"]) == {"Sku", "Name", "Price", "Bogus"}
    assert err["fields"]["Bogus"] == "unknown property"
    r = http.post("/api/v1/orders", json={"Name": "O", "CustomerNo": "7", "OrderDate": "2026-02-30"})
    assert set(error_of(r, 422, "validation_error")["fields"]) == {"CustomerNo", "OrderDate"}
    r = http.post("/api/v1/users", json={"FullName": "X", "Email": "not-an-address"})
    assert "Email" in error_of(r, 422, "validation_error")["fields"]
    r = http.post("/api/v1/orders", json=[1, 2])
    error_of(r, 422, "validation_error")


def test_422_uniqueness_and_references(http):
    p = product(http, "DUP")
    assert "Sku" in error_of(http.post("/api/v1/products", json={"Sku": "DUP", "Name": "x"}),
                             422, "validation_error")["fields"]
    assert http.post("/api/v1/users", json={"FullName": "A", "Email": "a@x.io"}).status_code == 201
    assert "Email" in error_of(http.post("/api/v1/users", json={"FullName": "B", "Email": "A@X.io"}),
                               422, "validation_error")["fields"]
    lines = [{"LineNo": 1, "ProductId": "prd_999999", "Quantity": "1", "UnitPrice": "1"}]
    r = http.post("/api/v1/orders", json={"Name": "O", "CustomerNo": 1, "OrderDate": "2026-01-01", "Lines": lines})
    assert error_of(r, 422, "validation_error")["fields"] == {"Lines.0.ProductId": "no product with Id 'prd_999999'"}
    lines = [{"LineNo": 1, "ProductId": p["Id"], "Quantity": "1"}] * 2
    r = http.post("/api/v1/orders", json={"Name": "O", "CustomerNo": 1, "OrderDate": "2026-01-01", "Lines": lines})
    assert "Lines" in error_of(r, 422, "validation_error")["fields"]
    # after a delete the Sku is free again
    assert http.delete(f"/api/v1/products/{p['Id']}").status_code == 204
    product(http, "DUP")


def test_400_bad_json_and_bad_params(http):
    r = http.post("/api/v1/products", content=b"{not json", headers={"Content-Type": "application/json"})
    error_of(r, 400, "bad_request")
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"modified_since": "yesterday"},
                   {"modified_since": "2026-11-25T10:00:00"}, {"cursor": "garbage"}):
        error_of(http.get("/api/v1/orders", params=params), 400, "bad_request")
    p = product(http)
    error_of(http.patch(f"/api/v1/products/{p['Id']}", json={}, headers={"If-Match": "abc"}), 400, "bad_request")
    error_of(http.post("/api/v1/products", json={"Sku": "k", "Name": "n"}, headers={"Idempotency-Key": "x" * 256}),
             400, "bad_request")


def test_404(http):
    error_of(http.get("/api/v1/orders/ord_424242"), 404, "not_found")
    error_of(http.patch("/api/v1/orders/ord_424242", json={"Name": "x"}), 404, "not_found")
    error_of(http.delete("/api/v1/orders/ord_424242"), 404, "not_found")
    error_of(http.get("/api/v1/invoices"), 404, "not_found")


def test_idempotency_key(http, sandbox):
    body = {"Sku": "IDEM", "Name": "Once"}
    first = http.post("/api/v1/products", json=body, headers={"Idempotency-Key": "key-1"})
    again = http.post("/api/v1/products", json=body, headers={"Idempotency-Key": "key-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    err = error_of(http.post("/api/v1/products", json={**body, "Name": "Other"}, headers={"Idempotency-Key": "key-1"}),
                   409, "idempotency_key_reused")
    assert "key-1" in err["message"]
    assert sandbox.app.state.sandbox.store.counts()["products"]["total"] == 1


def test_patch_merge_if_match_and_deleted(http):
    p1, p2 = product(http, "P1"), product(http, "P2")
    order = http.post("/api/v1/orders", json={
        "Name": "O", "CustomerNo": 5, "OrderDate": "2026-01-01", "YourReference": "r",
        "Lines": [{"LineNo": 1, "ProductId": p1["Id"], "Quantity": "1"},
                  {"LineNo": 2, "ProductId": p1["Id"], "Quantity": "2"}]}).json()
    oid = order["Id"]
    r = http.patch(f"/api/v1/orders/{oid}", json={"Name": "O2", "YourReference": None, "Version": 50,
                                                   "Lines": [{"LineNo": 7, "ProductId": p2["Id"], "Quantity": "3"}]},
                   headers={"If-Match": "1", "Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["Name"] == "O2" and rec["YourReference"] is None and rec["CustomerNo"] == 5
    assert [ln["LineNo"] for ln in rec["Lines"]] == [7]  # replaced as a whole
    assert rec["Version"] == 2 and rec["ModifiedAt"] > order["ModifiedAt"] and rec["CreatedAt"] == order["CreatedAt"]
    # a patch that changes nothing does not bump the version
    assert http.patch(f"/api/v1/orders/{oid}", json={"Name": "O2"}).json()["Version"] == 2
    err = error_of(http.patch(f"/api/v1/orders/{oid}", json={"Name": "O3"}, headers={"If-Match": "1"}),
                   412, "version_conflict")
    assert err["current_version"] == 2
    assert error_of(http.patch(f"/api/v1/orders/{oid}", json={"Name": None}), 422,
                    "validation_error")["fields"] == {"Name": "required"}
    assert "Nope" in error_of(http.patch(f"/api/v1/orders/{oid}", json={"Nope": 1}), 422,
                              "validation_error")["fields"]
    assert http.delete(f"/api/v1/orders/{oid}").status_code == 204
    error_of(http.patch(f"/api/v1/orders/{oid}", json={"Name": "O4"}), 409, "deleted")


def test_delete_is_soft_and_repeatable(http):
    p = product(http)
    err = error_of(http.delete(f"/api/v1/products/{p['Id']}", headers={"If-Match": "9"}), 412, "version_conflict")
    assert err["current_version"] == 1
    r = http.delete(f"/api/v1/products/{p['Id']}", headers={"If-Match": "1"})
    assert r.status_code == 204 and r.content == b""
    rec = http.get(f"/api/v1/products/{p['Id']}").json()
    assert rec["Deleted"] is True and rec["Version"] == 2 and rec["ModifiedAt"] > p["ModifiedAt"]
    assert http.delete(f"/api/v1/products/{p['Id']}").status_code == 204
    assert http.get(f"/api/v1/products/{p['Id']}").json() == rec  # nothing changes the second time


def test_change_feed(http):
    ids = [product(http, f"F{i}")["Id"] for i in range(7)]
    http.patch(f"/api/v1/products/{ids[0]}", json={"Name": "moved to the end"})
    http.delete(f"/api/v1/products/{ids[1]}")
    full = http.get("/api/v1/products").json()
    assert full["next_cursor"] is None
    items = full["items"]
    keys = [(i["ModifiedAt"], i["Id"]) for i in items]
    assert keys == sorted(keys) and len(set(i["ModifiedAt"] for i in items)) == 7
    assert [i["Id"] for i in items][-2:] == [ids[0], ids[1]]
    assert items[-1]["Deleted"] is True
    # modified_since is inclusive, also with another offset spelling the same instant
    mid = items[3]["ModifiedAt"]
    assert http.get("/api/v1/products", params={"modified_since": mid}).json()["items"] == items[3:]
    local = (datetime.fromisoformat(mid) + timedelta(hours=2)).isoformat().replace("+00:00", "+02:00")
    assert http.get("/api/v1/products", params={"modified_since": local}).json()["items"] == items[3:]
    # cursor paging: every record exactly once, in order
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = http.get("/api/v1/products", params=params).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == items
    # a cursor of another resource is rejected
    cur = http.get("/api/v1/products", params={"limit": 1}).json()["next_cursor"]
    error_of(http.get("/api/v1/orders", params={"cursor": cur}), 400, "bad_request")


def test_change_feed_default_limit(start_sandbox):
    server = start_sandbox(seed=150, rate_limit=None)
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        page = c.get("/api/v1/products").json()
        assert len(page["items"]) == 100 and page["next_cursor"]
        assert len(c.get("/api/v1/products", params={"limit": 1000}).json()["items"]) == 150


def test_bulk(http):
    p = product(http, "B0")
    ops = [
        {"op": "create", "idempotency_key": "b-1", "data": {"Sku": "B1", "Name": "one"}},
        {"op": "create", "idempotency_key": "b-2", "data": {"Sku": "B0", "Name": "dup sku"}},
        {"op": "update", "id": p["Id"], "if_version": 1, "data": {"Name": "renamed"}},
        {"op": "update", "id": p["Id"], "if_version": 1, "data": {"Name": "stale"}},
        {"op": "delete", "id": "prd_999999", "if_version": None},
        {"op": "delete", "id": p["Id"], "if_version": None},
        {"op": "update", "id": p["Id"], "data": {"Name": "after delete"}},
        {"op": "create", "idempotency_key": "b-1", "data": {"Sku": "B1", "Name": "other body"}},
        {"op": "explode"},
    ]
    r = http.post("/api/v1/products/bulk", json={"operations": ops})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 422, 200, 412, 404, 204, 409, 409, 422]
    assert results[0]["record"]["Sku"] == "B1" and results[0]["error"] is None
    assert results[2]["record"]["Version"] == 2
    assert results[3]["error"]["code"] == "version_conflict" and results[3]["error"]["current_version"] == 2
    assert results[6]["error"]["code"] == "deleted"
    assert results[7]["error"]["code"] == "idempotency_key_reused"
    assert all(x["record"] is None for x in results if x["status"] >= 400)
    # the same key + body again: the first response, nothing created
    again = http.post("/api/v1/products/bulk", json={"operations": ops[:1]}).json()["results"][0]
    assert again == results[0]
    error_of(http.post("/api/v1/products/bulk", json={"operations": []}), 422, "validation_error")
    error_of(http.post("/api/v1/products/bulk", json={"operations": [ops[4]] * 101}), 422, "validation_error")


def test_413_body_too_large(http):
    r = http.post("/api/v1/products", json={"Sku": "BIG", "Name": "x", "Description": "y" * (1 << 20)})
    error_of(r, 413, "payload_too_large")


def test_429_rate_limit_per_token(start_sandbox):
    server = start_sandbox(rate_limit=(5, 30.0))
    with httpx.Client(base_url=server.url, headers=AUTH) as c:
        assert all(c.get("/api/v1/users").status_code == 200 for _ in range(5))
        r = c.get("/api/v1/users")
        error_of(r, 429, "rate_limited")
        assert 1 <= int(r.headers["Retry-After"]) <= 30
        # unauthenticated calls are refused before they count
        assert httpx.get(server.url + "/api/v1/users").status_code == 401


def test_modified_at_strictly_increasing(http):
    stamps = [product(http, f"T{i}")["ModifiedAt"] for i in range(50)]
    assert stamps == sorted(set(stamps))


def test_seed_is_deterministic(start_sandbox):
    a, b = start_sandbox(seed=40, rate_limit=None), start_sandbox(seed=40, rate_limit=None)

    def snapshot(server):
        with httpx.Client(base_url=server.url, headers=AUTH) as c:
            out = {}
            for res in ("products", "orders", "users"):
                items = c.get(f"/api/v1/{res}", params={"limit": 1000}).json()["items"]
                out[res] = [{k: v for k, v in i.items() if k not in ("CreatedAt", "ModifiedAt")} for i in items]
            return out

    sa, sb = snapshot(a), snapshot(b)
    assert sa == sb
    assert (len(sa["products"]), len(sa["orders"]), len(sa["users"])) == (40, 40, 4)
    product_ids = {p["Id"] for p in sa["products"]}
    for order in sa["orders"]:
        assert 1 <= len(order["Lines"]) <= 5
        assert all(line["ProductId"] in product_ids for line in order["Lines"])


def test_openapi_and_sandbox_controls(http, sandbox):
    doc = httpx.get(sandbox.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/orders", "/api/v1/orders/{id}", "/api/v1/orders/bulk"} <= set(doc["paths"])
    assert httpx.get(sandbox.url + "/_sandbox/health").status_code == 200
    httpx.delete(sandbox.url + "/_sandbox/stats")
    product(http)
    http.get("/api/v1/products/prd_000001")
    http.get("/api/v1/products/prd_777777")
    stats = httpx.get(sandbox.url + "/_sandbox/stats").json()
    assert stats["requests"]["POST /api/v1/products"] == {"201": 1}
    assert stats["requests"]["GET /api/v1/products/{id}"] == {"200": 1, "404": 1}
    assert stats["records"]["products"] == {"total": 1, "deleted": 0, "live": 1}
    r = httpx.post(sandbox.url + "/_sandbox/faults", json={"error_rate": 1.0, "status": 503})
    assert r.status_code == 200
    error_of(http.get("/api/v1/products"), 503, "unavailable")
    httpx.delete(sandbox.url + "/_sandbox/faults")
    assert http.get("/api/v1/products").status_code == 200


def test_openapi_document_is_valid_openapi_3_1(sandbox):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(httpx.get(sandbox.url + "/openapi.json").json())


def test_sandbox_seed_adds_the_sample_records_on_request(http, sandbox):
    """``POST /_sandbox/seed`` (the benchmark gives running workers their load): N products,
    N orders with lines naming them, N/10 users; a body without a positive ``n`` is a 400."""
    r = httpx.post(sandbox.url + "/_sandbox/seed", json={"n": 20})
    assert r.status_code == 201
    counts = r.json()
    assert {name: c["live"] for name, c in counts.items()} == {"products": 20, "orders": 20, "users": 2}
    orders = http.get("/api/v1/orders", params={"limit": 100}).json()
    product_ids = {p["Id"] for p in http.get("/api/v1/products", params={"limit": 100}).json()["items"]}
    assert all(line["ProductId"] in product_ids for o in orders["items"] for line in o["Lines"])
    for body in ({}, {"n": 0}, {"n": "5"}, {"n": True}):
        assert httpx.post(sandbox.url + "/_sandbox/seed", json=body).status_code == 400
