"""Pacing by reference: a page of orders waits, for a bounded time, for the products it names.

An order's lines name Customcrm products; the order can be written to Business
NXT only once those products are linked. An order that comes first is parked
by its link (``streams.engine``): its state and its whole event are stored,
woken by ticks, and decided again when its products are linked. That is
correct, but in an initial load it is the common case (both feeds are read at
once, and the order feed runs ahead of the product links), and it costs a
changelog write, ticks and a second decision per order.

So the poller of an entity whose records name products (from the mapping:
``Flow.names_products``) asks :class:`ReferencePacer` before it publishes a
page. The page waits while one of the products it names is not linked and
either

- was published by this worker's product poller (its link is on its way), or
- may still be published: no product poll that started after the page was
  read has reached the end of its feed yet.

A product that is neither (deleted, invalid, never there) is not waited for:
its orders park as before. The wait ends as soon as the page's products are
linked; it also ends when no product was linked or published for ``IDLE`` seconds (Business
NXT down, a product dead-lettered), and after ``bound`` seconds in any case.
After a wait ended idle, pages do not wait again until a new product link
comes. Waiting never changes what is published, only when: correctness stays
with the links. Pollers run on the leader, which follows every product
reference (``streams.refs``), so it also sees links made by other workers.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Iterable, Sequence

from streams.mapping import Mapping

log = logging.getLogger(__name__)

#: Seconds without a new product link (or publication) after which a waiting page is published
#: anyway. At the start of a large load the first link comes only after the worker has routed
#: and decided the products before it: several seconds.
IDLE = 15.0
#: Seconds between two looks at the product links while a page waits.
STEP = 0.05


class ReferencePacer:
    """Holds pages of product-naming records until their products are linked (see the module)."""

    def __init__(self, mapping: Mapping, *, linked: Callable[[str], bool], links_made: Callable[[], int],
                 bound: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.linked = linked  # Customcrm product id -> is its link there?
        self.links_made = links_made  # a count that grows with every new product link
        self.bound = bound
        self.clock = clock
        self.referenced = mapping.reference_sources()  # (system, entity) of the products
        self.naming: dict[tuple[str, str], list] = {}  # (system, entity) -> its flows that name products
        for flow in mapping.flows:
            if flow.names_products:
                self.naming.setdefault((flow.source.system, flow.source.entity), []).append(flow)
        self._published: dict[str, float] = {}  # product id -> when published (until linked or bound)
        self._caught_up: dict[tuple[str, str], float] = {}  # products' poll reached the feed end: its start
        self._idle_at: int | None = None  # links_made() when a wait last ended idle
        self._last_published = float("-inf")  # when products were last published

    # ---- told by the pollers

    def poll_started(self, system: str, entity: str) -> float:
        """A poll of this entity starts; give its return value to ``poll_finished``."""
        if (system, entity) in self.referenced:
            self._prune()
        return self.clock()

    def poll_finished(self, system: str, entity: str, started: float) -> None:
        """A poll that started at ``started`` read its feed to the end."""
        if (system, entity) in self.referenced:
            self._caught_up[(system, entity)] = max(started, self._caught_up.get((system, entity), started))

    def published(self, system: str, entity: str, records: Sequence[Any]) -> None:
        """Records of this entity were published (products: their links are on their way)."""
        if (system, entity) in self.referenced:
            now = self._last_published = self.clock()
            for record in records:  # a deleted product gets no link: nothing to wait for
                if isinstance(record, dict) and isinstance(record.get("Id"), str) and not record.get("Deleted"):
                    self._published[record["Id"]] = now

    # ---- the decision (pure over the pacer's state) and the wait

    def named(self, system: str, entity: str, records: Sequence[Any]) -> set[str]:
        """The product ids a page of this entity names (none: its records name no products)."""
        return {product for flow in self.naming.get((system, entity), ()) for record in records
                for product in flow.source_references(record)}

    def awaited(self, products: Iterable[str], read_at: float) -> set[str]:
        """Which of the products named by a page read at ``read_at`` it waits for now. Once not
        waited for, a product is never waited for again (links stay, polls only catch up)."""
        waits = self._waits(read_at)
        return {product for product in products if waits(product)}

    def _waits(self, read_at: float) -> Callable[[str], bool]:
        caught_up = all(self._caught_up.get(pair, float("-inf")) >= read_at for pair in self.referenced)
        now = self.clock()

        def waits(product: str) -> bool:
            if self.linked(product):
                return False
            published = self._published.get(product)
            return not caught_up or (published is not None and now - published < self.bound)
        return waits

    async def before_publish(self, system: str, entity: str, records: Sequence[Any], read_at: float) -> float:
        """Wait until the products a page names are linked (bounded, see the module); returns the
        seconds waited."""
        if self.bound <= 0 or (self._idle_at is not None and self.links_made() == self._idle_at):
            return 0.0
        # the products the page waits for, the first to be linked last: each look drops the ones
        # linked from the end and stops at the first still awaited (a page that waits for many
        # products looks at each about once, not at all of them every step)
        waiting = sorted(self.awaited(self.named(system, entity, records), read_at),
                         key=lambda product: -self._published.get(product, float("inf")))
        if not waiting:
            return 0.0
        started = last_link = self.clock()
        made = self.links_made()
        self._idle_at = None
        while waiting:
            now = self.clock()
            idle = now - max(last_link, self._last_published) >= IDLE
            if idle or now - started >= self.bound:
                self._idle_at = made if idle else None
                log.info("%s %s: %d records published before %d of the products they name were linked "
                         "(%s after %.1f s); their links wait for them", system, entity, len(records),
                         len(self.awaited(waiting, read_at)),
                         "no new product link or publication" if self._idle_at is not None else "bound reached",
                         now - started)
                break
            await asyncio.sleep(STEP)
            if self.links_made() != made:
                made, last_link = self.links_made(), self.clock()
            waits = self._waits(read_at)
            while waiting and not waits(waiting[-1]):
                waiting.pop()
        return self.clock() - started

    def _prune(self) -> None:
        now = self.clock()
        for product in [p for p, at in self._published.items() if now - at >= self.bound or self.linked(p)]:
            del self._published[product]
