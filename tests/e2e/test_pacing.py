"""Pacing by reference, end to end: in an initial load, orders wait in the poller for the
products they name instead of parking in their links (``streams.pacing``)."""
from __future__ import annotations

import pytest

from tests.e2e.harness import metric, wait_in_sync

pytestmark = pytest.mark.e2e

SEED = 150  # products, orders (1-5 lines each) and users, all new when the worker starts


@pytest.mark.parametrize("wait, parks", [("60", False), ("0", True)], ids=["paced", "pacing-off"])
def test_an_initial_load_links_orders_after_their_products_without_parking_them(pipeline_factory, wait, parks):
    """Both feeds are read at once, the order feed in several pages. Paced, no order link
    ever parks; with the wait off (``TALKSTREAM_REFERENCE_WAIT=0``) orders do park, which is
    the work pacing saves. Either way everything ends in sync, once."""
    p = pipeline_factory(seed=SEED, env_extra={"TALKSTREAM_REFERENCE_WAIT": wait,
                                               "TALKSTREAM_POLL_PAGE_SIZE": "50"})
    p.start_worker()
    wait_in_sync(p, timeout=120)
    parked = metric(p, 'talkstream_parked_total{flow="order-order"}')
    assert (parked > 0) == parks, f"{parked:.0f} order links parked"
