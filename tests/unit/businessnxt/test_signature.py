"""Webhook signatures and event planning."""
from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from connectors.businessnxt.sandbox import sign
from connectors.businessnxt.webhook import compute_signature, plan, verify_signature

BODY = b'{"tableIdentifier":"order","event":"UPDATE","primaryKeys":[{"orderNo":1}]}'


def test_signature_is_base64_hmac_sha256_of_raw_body():
    expected = base64.b64encode(hmac.new(b"k3y", BODY, hashlib.sha256).digest()).decode()
    assert compute_signature(BODY, "k3y") == expected == sign(BODY, "k3y")
    assert verify_signature(BODY, expected, "k3y")
    assert not verify_signature(BODY, expected, "other")
    assert not verify_signature(BODY + b" ", expected, "k3y")
    assert not verify_signature(BODY, None, "k3y")
    assert not verify_signature(BODY, "", "k3y")


def test_plan():
    assert plan({"tableIdentifier": "order", "event": "UPDATE", "primaryKeys": [{"orderNo": 4}]}) == ("order", "fetch", 4)
    assert plan({"tableIdentifier": "order", "event": "DELETE", "primaryKeys": [{"orderNo": 4}]}) == ("order", "delete", 4)
    assert plan({"tableIdentifier": "orderLine", "event": "DELETE",
                 "primaryKeys": [{"orderNo": 4, "lineNo": 2}]}) == ("order", "fetch", 4)
    assert plan({"tableIdentifier": "product", "event": "INSERT", "primaryKeys": [{"productNo": "A"}]}) == \
        ("product", "fetch", "A")
    assert plan({"tableIdentifier": "customer", "event": "INSERT", "primaryKeys": [{"customerNo": 1}]}) is None
    with pytest.raises(ValueError):
        plan({"tableIdentifier": "order", "event": "UPDATE", "primaryKeys": []})
