"""A minimal Faust app for the broker smoke test: one agent, one changelog-backed table.

Run as ``python -m tests.integration.smoke_app worker``. Every event
``{"key": k, "seq": n}`` counts once per (key, seq) — the handler is
idempotent, so re-delivery after a crash does not double count. After table
recovery the worker writes the table to ``$SMOKE_DUMP`` (JSON), which the test
compares with the exact expected values.
"""
from __future__ import annotations

import json
import os

from streams.app import make_app
from streams.settings import Settings

# SMOKE_LINGER > 0 makes the producer gather records into multi-record batches (used to show
# what happens on the embedded broker without the single-record-batch protection)
app = make_app(Settings(), app_id=os.environ.get("SMOKE_APP_ID", "smoke"),
               producer_linger=float(os.environ.get("SMOKE_LINGER", "0")))
events = app.topic(os.environ.get("SMOKE_TOPIC", "smoke-events"), value_serializer="json",
                   key_serializer="raw", partitions=2)

counts = app.Table("counts", default=None, partitions=2, key_type=str, value_type=None)


@app.agent(events, concurrency=1)
async def count(stream):
    async for event in stream.events():
        value = event.value
        key = value["key"]
        state = counts.get(key) or {"count": 0, "last_seq": -1}
        if value["seq"] > state["last_seq"]:
            counts[key] = {"count": state["count"] + 1, "last_seq": value["seq"]}


@app.task
async def dump_recovered_table() -> None:
    """Tasks start after recovery: this is the table as recovered from its changelog."""
    path = os.environ.get("SMOKE_DUMP")
    if path:
        data = {k: v["count"] for k, v in counts.items()}
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)


if __name__ == "__main__":
    app.main()
