"""A link key's flow-topic partition is the one aiokafka's default partitioner gives it."""
import pytest
from aiokafka import partitioner

from streams.flowmessages import partition_of


@pytest.mark.parametrize("partitions", [1, 4, 8, 12])
def test_flow_partitions_are_the_producers(partitions):
    every = list(range(partitions))
    for i in range(300):
        key = f"product-product:SKU-{i}"
        assert partition_of(key, partitions) == partitioner.DefaultPartitioner()(key.encode(), every, every)
