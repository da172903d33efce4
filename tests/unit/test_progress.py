"""``talkstream run``'s "all flows linked" comes once every poller has polled and the count held
still: not while a page of orders waits for its products (the products alone look linked)."""
from __future__ import annotations

from streams.progress import Progress


def _status(orders: int, products: int, polled: int, pollers: int = 5) -> dict:
    row = lambda n: {"links": n, "linked": n, "pending": 0, "parked": 0, "blocked": 0, "deleted": 0}  # noqa: E731
    return {"flows": {"order-order": row(orders), "product-product": row(products), "user-order": row(20)},
            "last_poll": {f"poller{i}": 1.0 for i in range(polled)}, "pollers": pollers}


def test_not_while_a_poller_has_not_polled_yet():
    progress = Progress("http://unused")
    for _ in range(3):  # products and users linked, the order page still waiting for them
        assert progress.announce(_status(0, 200, polled=4)) is None


def test_once_everything_polled_and_the_count_held_still():
    progress = Progress("http://unused")
    assert progress.announce(_status(150, 200, polled=5)) is None  # first look: not yet held still
    assert progress.announce(_status(200, 200, polled=5)) is None  # it moved
    assert progress.announce(_status(200, 200, polled=5)) == "all flows linked (420 links)"
    assert progress.announce(_status(200, 200, polled=5)) is None  # once
