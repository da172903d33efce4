"""BusinessnxtPoller with in-memory stand-ins for the client, publisher and
watermark store (no I/O): invalid rows are dead-lettered, the rest published;
reset() starts a full read again; nothing is saved before publishing."""
from __future__ import annotations

from connectors.businessnxt.filters import compile_filter, page, sort_rows
from connectors.businessnxt.poller import BusinessnxtPoller
from connectors.businessnxt.schema import TABLES


class FakeClient:
    def __init__(self, rows):
        self.rows = rows

    async def read(self, table, *, filter=None, order_by=None, first=500, fields=None):
        pred = compile_filter(filter, TABLES[table].fields)
        rows = sort_rows([r for r in self.rows if _safe(pred, r)], order_by, TABLES[table].key)
        s, e = page(len(rows), first=first)
        return rows[s:e]


def _safe(pred, row):
    try:
        return pred(row)
    except TypeError:
        return False


class FakePublisher:
    def __init__(self):
        self.events = []

    async def publish(self, events):
        self.events += events


class FakeWatermarks:
    def __init__(self):
        self.saved = {}
        self.log = []

    async def load(self, key):
        return self.saved.get(key)

    async def save(self, key, value):
        self.log.append(value)
        self.saved[key] = value


class FakeDeadLetters:
    def __init__(self):
        self.letters = []

    async def publish(self, entry):
        self.letters.append(entry)


def product(no, ts, **kw):
    return {"productNo": no, "description": None, "information1": None, "webPage": None, "priceQuantity": None,
            "quantityPerUnit": None, "createdTimestamp": ts, "changedTimestamp": ts, **kw}


async def test_invalid_rows_dead_lettered_and_reset():
    rows = [product("A", "2026-01-01T10:00:00.0000000"), product("B", None),
            product("C", "2026-01-01T10:00:01.0000000")]
    client, pub, wms, dls = FakeClient(rows), FakePublisher(), FakeWatermarks(), FakeDeadLetters()
    bad = product("", "2026-01-01T10:00:00.5000000")
    client.rows.append(bad)
    poller = BusinessnxtPoller(client, pub, wms, "product", page_size=2, dead_letters=dls)
    assert await poller.poll_once() == 3
    assert sorted(e.id for e in pub.events) == ["A", "B", "C"]
    assert [e.version for e in pub.events if e.id == "B"] == [None]  # legacy row: no version
    assert len(dls.letters) == 1 and dls.letters[0].stage == "poll" and "productNo" in dls.letters[0].reason
    assert wms.saved["businessnxt.product"]["marks"]["product"] == "2026-01-01T10:00:01.0000000"
    client.rows.remove(bad)
    assert await poller.poll_once() == 0
    client.rows[0] = product("A", "2026-01-01T10:00:02.0000000")
    assert await poller.poll_once() == 1 and pub.events[-1].id == "A"
    await poller.reset()
    assert wms.saved["businessnxt.product"] is None
    assert await poller.poll_once() == 3


async def test_watermark_not_saved_when_publish_fails():
    class Boom(FakePublisher):
        async def publish(self, events):
            raise RuntimeError("broker down")

    wms = FakeWatermarks()
    poller = BusinessnxtPoller(FakeClient([product("A", "2026-01-01T10:00:00.0000000")]), Boom(), wms, "product")
    try:
        await poller.poll_once()
    except RuntimeError:
        pass
    assert wms.log == []


async def test_interrupted_full_read_resumes_after_the_last_saved_page():
    rows = [product(f"K{i:02d}", "2026-01-01T10:00:00.0000000" if i % 3 else None) for i in range(10)]

    class FailOnce(FakePublisher):
        calls = 0

        async def publish(self, events):
            FailOnce.calls += 1
            if FailOnce.calls == 3:
                raise RuntimeError("crash while publishing page 3")
            await super().publish(events)

    wms, pub = FakeWatermarks(), FailOnce()
    first = BusinessnxtPoller(FakeClient(rows), pub, wms, "product", page_size=3)
    try:
        await first.poll_once()
    except RuntimeError:
        pass
    assert wms.saved["businessnxt.product"]["scan"] == {"after": "K05"}
    second = BusinessnxtPoller(FakeClient(rows), pub, wms, "product", page_size=3)  # restart
    assert await second.poll_once() == 4
    assert [e.id for e in pub.events] == [f"K{i:02d}" for i in range(10)]  # each exactly once
    assert "scan" not in wms.saved["businessnxt.product"]
    assert await second.poll_once() == 0
