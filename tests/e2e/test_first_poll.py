"""The leader polls every system as soon as it is connected, not one poll interval after it
started (``first_polls`` in ``streams.stages.poll``)."""
from __future__ import annotations

import pytest

from tests.e2e.harness import metric, wait_in_sync

pytestmark = pytest.mark.e2e


def test_records_there_at_start_sync_long_before_the_first_timer_tick(pipeline_factory):
    """With a 10-minute poll interval, only the poll at start can have read the seeded records."""
    p = pipeline_factory(seed=10, env_extra={"TALKSTREAM_POLL_INTERVAL": "600"})
    p.start_worker()
    wait_in_sync(p, timeout=90)
    for system, entity in (("customcrm", "product"), ("customcrm", "order"), ("customcrm", "user"),
                           ("businessnxt", "product"), ("businessnxt", "order")):
        assert metric(p, f'talkstream_polls_total{{entity="{entity}",system="{system}"}}') == 1, (system, entity)
