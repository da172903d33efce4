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


# ------------------------------------------------------------- holes in the followed partitions
from collections import namedtuple  # noqa: E402

from aiokafka import TopicPartition  # noqa: E402

from streams.refs import HOLE_WAIT  # noqa: E402

Record = namedtuple("Record", "offset key value")
TP = TopicPartition("talkstream.product-refs", 0)


def _ref(offset: int, product: str, sku: str) -> Record:
    return Record(offset, f"c:{product}".encode(), sku.encode())


def test_a_record_shown_after_a_later_one_is_read_again_not_skipped():
    """Tansu can show record N+1 before record N when two workers write at once: the follower
    must not move past N (an order needing that reference would park until its bound)."""
    refs = _refs()
    refs._live_from = {TP: 0}
    assert refs.take(TP, [_ref(0, "p0", "S0"), _ref(1, "p1", "S1"), _ref(3, "p3", "S3")], now=0) == 2
    assert refs.get("c:p1") == "S1" and refs.get("c:p3") is None  # nothing past the hole yet
    assert refs.take(TP, [_ref(2, "p2", "S2"), _ref(3, "p3", "S3")], now=0.1) is None
    assert [refs.get(f"c:p{i}") for i in range(4)] == ["S0", "S1", "S2", "S3"]


def test_a_hole_that_stays_is_accepted_after_a_while():
    refs = _refs()
    refs._live_from = {TP: 0}
    assert refs.take(TP, [_ref(0, "p0", "S0"), _ref(2, "p2", "S2")], now=10) == 1
    assert refs.take(TP, [_ref(2, "p2", "S2")], now=10 + HOLE_WAIT / 2) == 1
    assert refs.take(TP, [_ref(2, "p2", "S2")], now=10 + HOLE_WAIT) is None
    assert refs.get("c:p2") == "S2"


def test_holes_from_before_the_start_are_compaction_and_accepted():
    refs = _refs()
    refs._live_from = {TP: 100}
    assert refs.take(TP, [_ref(5, "p5", "S5"), _ref(40, "p40", "S40"), _ref(99, "p99", "S99")], now=0) is None
    assert refs.get("c:p40") == "S40" and refs.get("c:p99") == "S99"


def test_records_read_again_do_not_undo_a_later_one():
    refs = _refs()
    refs._live_from = {TP: 0}
    assert refs.take(TP, [_ref(0, "p", "OLD"), _ref(1, "p", "NEW")], now=0) is None
    assert refs.take(TP, [_ref(0, "p", "OLD"), _ref(1, "p", "NEW"), _ref(2, "q", "Q")], now=1) is None
    assert refs.get("c:p") == "NEW" and refs.get("c:q") == "Q"


def test_newly_linked_products_are_handed_out_once():
    """The wake-up timer asks which products got a reference since it last asked."""
    refs = _refs()
    refs.put("prd_1", "SKU-1")  # our own
    refs._set("c:prd_2", "SKU-2")  # followed from another worker
    refs._set("b:SKU-3", "prd_3")  # an old reverse record: not a new link
    refs.put("prd_1", "SKU-1")  # known already
    assert refs.take_fresh() == ["prd_1", "prd_2"]
    assert refs.take_fresh() == []
