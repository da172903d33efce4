"""Link keys: ``<flow>:<ident>``, the key of a link in the ``links`` table and on every internal topic.

The ident is the Customcrm id, or for a flow with a match key (products) the match
value (the SKU); a Business NXT record that creates its Customcrm record
(``create_in_source``) has ``<flow>:@businessnxt:<key>`` until the Customcrm record
exists (a Customcrm id never starts with ``@``). Flow ids hold no ``:`` (the mapping
checks). Every key is built and split here.
"""
from __future__ import annotations

TARGET_ORIGIN = "@businessnxt:"


def link_key(flow_id: str, ident: str) -> str:
    return f"{flow_id}:{ident}"


def target_origin_key(flow_id: str, target_id: str) -> str:
    """The key of a link a Business NXT record started (``create_in_source``)."""
    return link_key(flow_id, f"{TARGET_ORIGIN}{target_id}")


def flow_of(key: str) -> str:
    return key.partition(":")[0]


def ident_of(key: str) -> str:
    return key.partition(":")[2]


def is_target_origin(key: str) -> bool:
    return ident_of(key).startswith(TARGET_ORIGIN)
