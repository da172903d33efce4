"""A routed batch spans partitions: each table write goes to the changelog partition of its own event."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust

from connectors.common.patches import faust_fixes


class _Event:  # weak-referenceable, like Faust's events
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(topic="customcrm.product.changes", partition=partition)


def test_each_table_write_of_a_batch_goes_to_its_events_partition():
    app = faust.App("unit-current-event", store="memory://", autodiscover=False)
    table = app.Table("routes", default=None, partitions=4)
    table._verified_source_topics_for_partitions.add("customcrm.product.changes")  # no broker to ask
    sent: list[tuple[int, str]] = []

    def send_changelog(partition, key, value, *args, **kwargs):
        sent.append((partition, key))
        return SimpleNamespace(message=SimpleNamespace(partition=partition))  # Faust's FutureMessage, enough of it
    table.send_changelog = send_changelog

    async def one_batch() -> None:  # one task, like the route agent's loop over a take_events batch
        events = [_Event(partition) for partition in (2, 0, 3, 2)]  # held, as take_events holds them
        for event in events:
            faust_fixes.set_current_event(event)
            table[f"record-{len(sent)}"] = {"product-product": "product-product:SKU"}

    asyncio.run(one_batch())
    assert [partition for partition, _key in sent] == [2, 0, 3, 2]
