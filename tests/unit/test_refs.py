"""The product-reference view (``streams.refs.SharedRefs``): one record per reference, read both ways."""
from __future__ import annotations

from streams.refs import SharedRefs


def _refs() -> SharedRefs:
    return SharedRefs("127.0.0.1:1")  # never started: only the in-memory view is used here


def test_a_reference_is_one_record_and_is_read_both_ways():
    refs = _refs()
    assert refs.put("prd_1", "SKU-1") is True
    assert refs.get("c:prd_1") == "SKU-1"
    assert refs.get("b:SKU-1") == "prd_1"
    assert refs.put("prd_1", "SKU-1") is False  # known: nothing to send


def test_a_relinked_product_drops_its_old_reverse_entry():
    refs = _refs()
    refs.put("prd_1", "SKU-1")
    assert refs.put("prd_1", "SKU-9") is True
    assert refs.get("b:SKU-9") == "prd_1"
    assert refs.get("b:SKU-1") is None


def test_records_read_from_the_topic_fill_both_ways_and_tombstones_remove():
    refs = _refs()
    refs._set("c:prd_2", "SKU-2")  # as the follower reads another worker's write
    assert refs.get("b:SKU-2") == "prd_2"
    refs._set("c:prd_2", None)  # compaction tombstone
    assert refs.get("c:prd_2") is None and refs.get("b:SKU-2") is None


def test_reverse_records_of_earlier_versions_are_still_read():
    refs = _refs()
    refs._set("b:SKU-3", "prd_3")
    assert refs.get("b:SKU-3") == "prd_3"
