"""Pacing by reference (streams.pacing): which products a page of orders waits for, and the wait."""
from __future__ import annotations

import asyncio
import time

import pytest

from streams import pacing
from streams.mapping import load_mapping
from streams.pacing import ReferencePacer

MAPPING = load_mapping()
CRM = "customcrm"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def order(oid: str, *products) -> dict:
    return {"Id": oid, "Lines": [{"LineNo": n, "ProductId": p} for n, p in enumerate(products, 1)]}


def pacer(linked: set[str], *, bound: float = 60.0, clock=time.monotonic) -> ReferencePacer:
    return ReferencePacer(MAPPING, linked=linked.__contains__, links_made=lambda: len(linked), bound=bound,
                          clock=clock)


def test_a_page_names_the_products_of_its_order_lines_and_nothing_else():
    p = pacer(set())
    page = [order("o1", "prd_1", "prd_2"), order("o2", "prd_2"), {"Id": "o3", "Lines": "not a list"},
            {"Id": "o4", "Lines": [None, {"LineNo": 1, "ProductId": 7}]}]
    assert p.named(CRM, "order", page) == {"prd_1", "prd_2"}
    assert p.named(CRM, "user", [{"Id": "u1", "Lines": [{"ProductId": "prd_1"}]}]) == set()  # users name none
    assert p.named(CRM, "product", [{"Id": "prd_1"}]) == set()


def test_a_published_product_is_waited_for_until_it_is_linked():
    linked: set[str] = set()
    clock = Clock()
    p = pacer(linked, clock=clock)
    started = p.poll_started(CRM, "product")
    p.published(CRM, "product", [{"Id": "prd_1"}])
    p.poll_finished(CRM, "product", started)
    read_at = started  # the products' poll started with the order page, and went to the end
    assert p.awaited({"prd_1"}, read_at) == {"prd_1"}
    linked.add("prd_1")
    assert p.awaited({"prd_1"}, read_at) == set()


def test_an_unknown_product_is_waited_for_only_until_a_later_product_poll_reached_the_end():
    clock = Clock()
    p = pacer(set(), clock=clock)
    read_at = clock.now
    assert p.awaited({"prd_9"}, read_at) == {"prd_9"}  # the products' poll may not have got to it yet
    clock.now += 1
    started = p.poll_started(CRM, "product")
    assert p.awaited({"prd_9"}, read_at) == {"prd_9"}  # that poll has not reached the end yet
    p.poll_finished(CRM, "product", started)
    assert p.awaited({"prd_9"}, read_at) == set()  # not there: its orders park, as without pacing
    assert p.awaited({"prd_9"}, clock.now + 1) == {"prd_9"}  # a page read after that poll began waits again


def test_a_deleted_product_is_not_waited_for():
    p = pacer(set())
    p.poll_finished(CRM, "product", p.poll_started(CRM, "product"))
    p.published(CRM, "product", [{"Id": "prd_1", "Deleted": True}, {"Id": "prd_2", "Deleted": False}])
    assert p.awaited({"prd_1", "prd_2"}, 0) == {"prd_2"}


def test_a_product_published_longer_ago_than_the_bound_is_not_waited_for():
    clock = Clock()
    p = pacer(set(), bound=10, clock=clock)
    p.poll_finished(CRM, "product", p.poll_started(CRM, "product"))
    p.published(CRM, "product", [{"Id": "prd_1"}])
    clock.now += 9
    assert p.awaited({"prd_1"}, 0) == {"prd_1"}
    clock.now += 1
    assert p.awaited({"prd_1"}, 0) == set()
    p.poll_started(CRM, "product")
    assert p._published == {}  # forgotten at the next products' poll


def test_a_page_waits_until_its_products_are_linked():
    linked: set[str] = set()
    p = pacer(linked)
    p.published(CRM, "product", [{"Id": "prd_1"}, {"Id": "prd_2"}])

    async def go():
        waiting = asyncio.create_task(p.before_publish(CRM, "order", [order("o1", "prd_1", "prd_2")], 0.0))
        linked.add("prd_1")
        await asyncio.sleep(0)
        assert not waiting.done()
        linked.add("prd_2")
        return await asyncio.wait_for(waiting, timeout=5)

    assert asyncio.run(go()) > 0


def test_a_page_whose_products_are_linked_or_that_names_none_does_not_wait():
    p = pacer({"prd_1"})
    p.published(CRM, "product", [{"Id": "prd_1"}])

    async def go():
        return (await p.before_publish(CRM, "order", [order("o1", "prd_1")], 0.0),
                await p.before_publish(CRM, "user", [{"Id": "u1"}], 0.0),
                await pacer(set(), bound=0).before_publish(CRM, "order", [order("o1", "prd_2")], 0.0))

    assert asyncio.run(go()) == (0.0, 0.0, 0.0)


def test_a_wait_without_new_product_links_ends_and_later_pages_do_not_wait_until_one_comes(monkeypatch):
    monkeypatch.setattr(pacing, "IDLE", 0.2)
    linked: set[str] = set()
    p = pacer(linked)
    p.published(CRM, "product", [{"Id": "prd_1"}, {"Id": "prd_2"}])

    async def go():
        first = await asyncio.wait_for(p.before_publish(CRM, "order", [order("o1", "prd_1")], 0.0), timeout=5)
        second = await p.before_publish(CRM, "order", [order("o2", "prd_1")], 0.0)
        linked.add("prd_1")  # a product link comes: pages wait again
        third = asyncio.create_task(p.before_publish(CRM, "order", [order("o3", "prd_2")], 0.0))
        await asyncio.sleep(0)
        waited_again = not third.done()
        linked.add("prd_2")
        await asyncio.wait_for(third, timeout=5)
        return first, second, waited_again

    first, second, waited_again = asyncio.run(go())
    assert first >= 0.2 and second == 0.0 and waited_again


def test_a_wait_does_not_end_idle_while_products_are_still_being_published(monkeypatch):
    """At the start of a large load the first product link comes after several seconds, while the
    product poller is still publishing: that is not idle."""
    monkeypatch.setattr(pacing, "IDLE", 0.2)
    linked: set[str] = set()
    p = pacer(linked)
    p.published(CRM, "product", [{"Id": "prd_1"}])

    async def go():
        waiting = asyncio.create_task(p.before_publish(CRM, "order", [order("o1", "prd_1")], 0.0))
        for i in range(12):  # 0.6 s of publications, no link
            await asyncio.sleep(0.05)
            p.published(CRM, "product", [{"Id": f"more_{i}"}])
        still_waiting = not waiting.done()
        linked.add("prd_1")
        await asyncio.wait_for(waiting, timeout=5)
        return still_waiting

    assert asyncio.run(go())


@pytest.mark.parametrize("bound", [0.3])
def test_a_wait_ends_at_the_bound_while_other_products_keep_being_linked(bound):
    linked: set[str] = set()
    p = pacer(linked, bound=bound)
    p.published(CRM, "product", [{"Id": "prd_1"}])

    async def go():
        task = asyncio.create_task(p.before_publish(CRM, "order", [order("o1", "prd_1")], 0.0))
        n = 0
        while not task.done():  # other products keep being linked: never idle
            n += 1
            linked.add(f"other_{n}")
            await asyncio.sleep(0.02)
        return await task

    assert bound <= asyncio.run(asyncio.wait_for(go(), timeout=5)) < 5


def test_a_page_waiting_for_many_products_looks_at_each_about_once():
    """Products are linked in about the order they were published; each look stops at the first
    one still awaited, so a long wait does not re-check every product at every step."""
    linked: set[str] = set()
    looks = []

    def is_linked(product: str) -> bool:
        looks.append(product)
        return product in linked
    products = [f"prd_{i}" for i in range(1000)]
    p = ReferencePacer(MAPPING, linked=is_linked, links_made=lambda: len(linked), bound=60)
    p.published(CRM, "product", [{"Id": pid} for pid in products])
    page = [order(f"o{i}", products[i], products[999 - i]) for i in range(500)]

    async def go():
        waiting = asyncio.create_task(p.before_publish(CRM, "order", page, 0.0))
        for i in range(0, 1000, 50):  # 50 links per step, in publication order
            await asyncio.sleep(pacing.STEP)
            linked.update(products[i:i + 50])
        await asyncio.wait_for(waiting, timeout=10)

    asyncio.run(go())
    assert len(looks) < 3 * 1000
