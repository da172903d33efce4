"""What talkstream knows about one record, and why a value is what it is: ``talkstream explain``.

Pure functions over link states as the ``links`` changelog holds them
(``streams.linkcodec``); the command reads that changelog from the broker, so any
machine that reaches the broker can explain any link.

For each link a record belongs to: the flow, the link key, both record ids, the
status and why it waits (parked for products, blocked after a dead letter, held
while its flow is paused, retrying, a delete waiting); and per mapped property
the agreed value, the side it came from and when, whether each side's last
report and talkstream's last write to each side carry that value (the link keeps
their hashes, not the values), the writes in flight, and the link's recent
decisions from ``talkstream.decisions`` (``schemas.decision``): what triggered
each, what came of it, and per property the value before and after and why.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from streams import linkcodec
from streams.linkkeys import ident_of
from streams.engine import SIDES, h


def links_of(states: dict[str, bytes], system: str, record_id: str) -> list[dict]:
    """The link states (unpacked) whose ``system`` record is ``record_id``, or whose link key names it
    (``<flow>:<id>``, e.g. a product's SKU)."""
    found = []
    wanted = orjson.dumps(record_id)[1:-1]  # the id as it appears in the stored JSON
    for key, value in states.items():
        named = ident_of(key) == record_id
        if not value or not (named or wanted in value):  # only a link whose stored bytes name it is unpacked
            continue
        link = linkcodec.unpack(key, value)
        if named or (link.get("ids") or {}).get(system) == record_id:
            found.append(link)
    return sorted(found, key=lambda link: link["key"])


def _when(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def waiting(link: dict) -> list[str]:
    """Why the link is not simply in step, in words (empty: nothing waits)."""
    why = []
    if link.get("blocked"):
        why.append("blocked: a write was dead-lettered; `talkstream deadletters redrive` sends it again")
    if link.get("park"):
        park = link["park"]
        missing = ", ".join(park.get("missing") or []) or "its products"
        why.append(f"parked since {_when(park.get('since'))}: waiting for {missing} to be linked "
                   f"(attempt {park.get('attempts', 0)})")
    if link.get("held"):
        why.append("held: its flow is paused or tripped; `talkstream flows resume` lets the write through")
    if link.get("delete_pending"):
        why.append(f"a delete from {link['delete_pending']} waits for its flow to run again")
    if link.get("retry_at"):
        why.append(f"a write is retried at {_when(link['retry_at'])}")
    failures = {side: n for side, n in (link.get("fail") or {}).items() if n}
    if failures:
        why.append("failed attempts: " + ", ".join(f"{side} {n}" for side, n in failures.items()))
    return why


def explain_link(link: dict, recent: list[dict] | None = None) -> dict[str, Any]:
    """One link, explained (JSON-ready), with its ``recent`` decision records."""
    properties = []
    for name, (value, at, side) in sorted((link.get("base") or {}).items()):
        agreed = h(value)
        properties.append({
            "property": name,
            "agreed": value,
            "from": side,
            "at": _when(at),
            # True: the side's last report (or our last write there) has the agreed value
            "reported": {s: _matches(link, "rep", s, name, agreed) for s in SIDES},
            "written": {s: _matches(link, "wrote", s, name, agreed) for s in SIDES},
        })
    return {
        "flow": link.get("flow"),
        "key": link["key"],
        "ids": link.get("ids"),
        "status": link.get("status"),
        "waiting": waiting(link),
        "seen": link.get("seen"),
        "deleted": link.get("deleted"),
        "in_flight": [{"command": command_id, "to": write.get("side"), "op": write.get("op"),
                       "properties": write.get("props"), "sent": _when(write.get("at")),
                       "attempt": (link.get("fail") or {}).get(write.get("side"), 0) + 1}
                      for command_id, write in (link.get("inflight") or {}).items()],
        "properties": properties,
        "decisions": [{**record, "at": _when(record.get("at"))} for record in recent or []],
    }


def _matches(link: dict, slot: str, side: str, name: str, agreed: str) -> bool | None:
    hashes = ((link.get(slot) or {}).get(side) or {})
    return None if name not in hashes else hashes[name] == agreed


def render(explained: list[dict], system: str, record_id: str):
    """Rich renderables for the terminal."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not explained:
        return [Text(f"no link holds {system} record {record_id}")]
    out = []
    mark = {True: "same", False: "differs", None: "-"}
    for link in explained:
        ids = ", ".join(f"{side} {ident}" for side, ident in (link["ids"] or {}).items())
        head = Text(f"{link['flow']}  {link['key']}  [{link['status']}]  {ids}", style="bold")
        out.append(head)
        for line in link["waiting"]:
            out.append(Text(f"  {line}"))
        for write in link["in_flight"]:
            out.append(Text(f"  in flight: {write['op']} to {write['to']} ({', '.join(write['properties'] or [])}), "
                            f"sent {write['sent']}, attempt {write['attempt']}"))
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("property", "agreed value", "from", "at", "reported c/b", "written c/b"):
            table.add_column(column)
        for prop in link["properties"]:
            table.add_row(prop["property"], _short(prop["agreed"]), prop["from"] or "", prop["at"] or "",
                          "/".join(mark[prop["reported"][s]] for s in SIDES),
                          "/".join(mark[prop["written"][s]] for s in SIDES))
        out.append(table)
        for record in link["decisions"]:
            trigger = record.get("trigger") or {}
            what = " ".join(str(trigger[k]) for k in ("kind", "side", "op", "version", "status") if trigger.get(k))
            out.append(Text(f"  {record['at']}  {what}: {', '.join(record.get('outcome') or [])}"))
            for change in record.get("changes") or []:
                out.append(Text(f"    {change['property']}: {_short(change['old'])} -> {_short(change['new'])} "
                                f"({change['why']})"))
    return out


def _short(value: Any, width: int = 30) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"
