"""The start-up self-checks that decide which of the embedded broker's workarounds a worker
installs (``connectors.common.patches.embedded_broker``): each finds its defect on the
embedded broker and none on Apache Kafka, so no workaround runs there."""
from __future__ import annotations

import asyncio

import pytest

from connectors.common.kafka import end_offsets_are_exact, first_generation, idle_fetch_waits_out

pytestmark = pytest.mark.integration


def test_the_embedded_broker_shows_its_three_defects(broker):
    assert asyncio.run(end_offsets_are_exact(broker.bootstrap)) is False
    assert asyncio.run(idle_fetch_waits_out(broker.bootstrap)) is True
    assert asyncio.run(first_generation(broker.bootstrap)) == 0


@pytest.mark.kafka
def test_apache_kafka_shows_none_of_them(kafka):
    assert asyncio.run(end_offsets_are_exact(kafka.bootstrap)) is True
    assert asyncio.run(idle_fetch_waits_out(kafka.bootstrap)) is False
    assert asyncio.run(first_generation(kafka.bootstrap)) >= 1
