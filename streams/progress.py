"""Live progress of ``talkstream run``: per flow links, events per second,
parked, dead letters, last poll per system — from the worker's ``/status``.

A live rich table on a terminal; one plain line every 10 s in a non-TTY log.
Prints "all flows linked" once, when every link is linked and nothing is
pending or parked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx
from rich.console import Console
from rich.table import Table


@dataclass
class Progress:
    status_url: str
    console: Console = field(default_factory=Console)
    _last_events: float | None = None
    _last_at: float = 0.0
    rate: float = 0.0
    announced: bool = False
    _last_total: int | None = None
    _last_line: float = 0.0

    def fetch(self) -> dict | None:
        try:
            response = httpx.get(self.status_url, timeout=2.0)
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def update(self, status: dict) -> None:
        now = time.monotonic()
        events = status.get("events_in", 0.0)
        if self._last_events is not None and now > self._last_at:
            self.rate = max(0.0, (events - self._last_events) / (now - self._last_at))
        self._last_events, self._last_at = events, now

    @staticmethod
    def all_linked(status: dict) -> bool:
        flows = status.get("flows", {})
        total = sum(f["links"] for f in flows.values())
        return total > 0 and all(f["links"] == f["linked"] + f["deleted"] + f["blocked"] and not f["pending"]
                                 and not f["parked"] for f in flows.values())

    def table(self, status: dict) -> Table:
        table = Table(title=f"talkstream — {self.rate:,.0f} events/s, dead letters "
                            f"{int(status.get('deadletters', 0))}", expand=False)
        for col in ("flow", "links", "linked", "pending", "parked", "blocked"):
            table.add_column(col, justify="left" if col == "flow" else "right")
        for fid, row in status.get("flows", {}).items():
            table.add_row(fid, *(str(row[c]) for c in ("links", "linked", "pending", "parked", "blocked")))
        polls = status.get("last_poll", {})
        if polls:
            now = time.time()
            table.caption = "last poll: " + ", ".join(f"{k} {now - v:.0f}s ago" for k, v in sorted(polls.items()))
        return table

    def line(self, status: dict) -> str:
        flows = status.get("flows", {})
        parts = [f"{fid} {r['linked']}/{r['links']} linked" + (f", {r['parked']} parked" if r["parked"] else "")
                 for fid, r in flows.items()]
        return (f"progress: {'; '.join(parts)}; {self.rate:.0f} events/s; "
                f"dead letters {int(status.get('deadletters', 0))}")

    def announce(self, status: dict) -> str | None:
        """"all flows linked (N links)" once every poller has polled, every link is linked, and the
        count held still since the last look (a page of orders may wait for its products to be
        linked: the products alone would look like "all linked" meanwhile)."""
        settled = self.all_linked(status) and len(status.get("last_poll", {})) >= status.get("pollers", 0)
        total = sum(f["linked"] for f in status.get("flows", {}).values())
        previous, self._last_total = self._last_total, total if settled else None
        if not self.announced and settled and total == previous:
            self.announced = True
            return f"all flows linked ({total} links)"
        if self.announced and not self.all_linked(status):
            self.announced = False
        return None
