"""Batches of many links' ticks and results on the flow topic: each on its links' partition, in order."""
from __future__ import annotations

import orjson
import pytest

from streams.flowmessages import batches, encode, partition_of, unpack

PARTITIONS = 4


def _partition(key: str) -> int:
    return partition_of(key, PARTITIONS)


def _ticks(n: int) -> list[tuple[str, dict]]:
    return [(f"order-order:ord_{i:05d}", {"kind": "tick", "flow": "order-order"}) for i in range(n)]


def test_every_member_of_a_batch_is_on_the_partition_the_batch_is_sent_to():
    out = batches(_ticks(200), _partition)
    assert len(out) == PARTITIONS  # one message per partition, not one per link
    for key, value in out:
        members = unpack(key, value)
        assert {_partition(member_key) for member_key, _ in members} == {_partition(key.decode())}


def test_members_keep_their_order_and_nothing_is_lost_or_repeated():
    messages = _ticks(200) + [("order-order:ord_00003", {"kind": "result", "flow": "order-order",
                                                          "result": {"command_id": "c1"}})]
    unpacked = [pair for key, value in batches(messages, _partition) for pair in unpack(key, value)]
    assert sorted(k for k, _ in unpacked) == sorted(k for k, _ in messages)
    for partition in range(PARTITIONS):
        assert ([(k, m["kind"]) for k, m in unpacked if _partition(k) == partition]
                == [(k, m["kind"]) for k, m in messages if _partition(k) == partition])
    assert [m for k, m in unpacked if k == "order-order:ord_00003"][-1]["result"] == {"command_id": "c1"}


@pytest.mark.parametrize(("n", "limit", "expected"), [(10, 3, 4), (3, 3, 1), (0, 3, 0)])
def test_a_batch_holds_at_most_limit_members(n, limit, expected):
    out = batches(_ticks(n), lambda _key: 0, limit=limit)
    assert len(out) == expected
    assert all(len(unpack(k, v)) <= limit for k, v in out)


def test_one_links_message_unpacks_to_itself_under_its_own_key():
    value = encode("change", "product-product", event={"id": "p1"})
    assert unpack(b"product-product:SKU-1", value) == [
        ("product-product:SKU-1", {"kind": "change", "flow": "product-product", "event": {"id": "p1"}})]


def test_an_unreadable_record_raises():
    with pytest.raises(orjson.JSONDecodeError):
        unpack(b"k", b"{not json")
    with pytest.raises(KeyError):
        unpack(b"k", b'{"kind": "batch"}')
