"""``connectors.common.murmur2`` gives the same hash, and so the same partitions, as aiokafka's."""
import random

import pytest
from aiokafka import partitioner

from connectors.common import patches
from connectors.common.patches import speed
from connectors.common.murmur2 import murmur2

REFERENCE = speed.AIOKAFKA_MURMUR2


@pytest.mark.parametrize("length", range(70))
def test_same_hash_as_aiokafka_for_every_length(length):
    rnd = random.Random(length)
    for _ in range(50):
        data = bytes(rnd.randrange(256) for _ in range(length))
        assert murmur2(data) == REFERENCE(data)


def test_known_values_of_kafkas_java_client():
    # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2), as signed ints
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, b"abc": 479470107}
    for data, signed in cases.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


def test_apply_puts_it_in_aiokafkas_partitioner():
    patches.apply()
    assert partitioner.murmur2 is murmur2
    keys = [f"order-order:ord_{i:08d}".encode() for i in range(200)]
    every = list(range(8))
    assert [partitioner.DefaultPartitioner()(k, every, every) for k in keys] == \
           [(REFERENCE(k) & 0x7FFFFFFF) % 8 for k in keys]


@pytest.mark.parametrize("partitions", [1, 4, 8, 12])
def test_flow_partitions_are_the_producers(partitions):
    from streams.flowmessages import partition_of

    every = list(range(partitions))
    for i in range(300):
        key = f"product-product:SKU-{i}"
        assert partition_of(key, partitions) == partitioner.DefaultPartitioner()(key.encode(), every, every)
