"""Example downstream consumer: a local SQLite mirror of all orders, from the change topics.

A plain aiokafka consumer in its own consumer group (talkstream does not know
it exists). It bootstraps from offset 0 — in production the change topics are
compacted, so offset 0 holds the latest version of every record — and then
follows the topics live. Delivery is at least once: a row is replaced only by
a newer version, so a re-delivered event changes nothing.

    python examples/sqlite_mirror.py --broker 127.0.0.1:9092 --db orders.db

Table ``orders``: one row per (system, id) with the latest name, the version,
whether it is deleted, and the whole record as JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
from datetime import datetime

from aiokafka import AIOKafkaConsumer

TOPICS = ["customcrm.order.changes", "businessnxt.order.changes"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    system   TEXT NOT NULL,
    id       TEXT NOT NULL,
    version  TEXT,
    name     TEXT,
    deleted  INTEGER NOT NULL DEFAULT 0,
    data     TEXT,
    PRIMARY KEY (system, id)
)
"""


def newer(system: str, new: str | None, old: str | None) -> bool:
    """Customcrm versions are integers; Businessnxt versions are UTC times."""
    if old is None or new is None:
        return True
    if system == "customcrm":
        return int(new) > int(old)
    return datetime.fromisoformat(new.replace("Z", "+00:00")) > datetime.fromisoformat(old.replace("Z", "+00:00"))


def apply(db: sqlite3.Connection, event: dict) -> bool:
    """Apply one change event; returns whether the mirror changed."""
    system, rid, version = event["system"], event["id"], event.get("version")
    row = db.execute("SELECT version FROM orders WHERE system = ? AND id = ?", (system, rid)).fetchone()
    if row is not None and not newer(system, version, row[0]):
        return False
    data = event.get("data") or {}
    deleted = event["op"] == "delete"
    name = data.get("Name") if system == "customcrm" else data.get("name")
    db.execute(
        "INSERT INTO orders (system, id, version, name, deleted, data) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (system, id) DO UPDATE SET version = excluded.version, name = excluded.name, "
        "deleted = excluded.deleted, data = CASE WHEN excluded.data = '{}' THEN data ELSE excluded.data END",
        (system, rid, version, name, int(deleted), json.dumps(data)),
    )
    return True


async def mirror(broker: str, db_path: str, group: str = "example-sqlite-mirror",
                 stop: asyncio.Event | None = None) -> None:
    db = sqlite3.connect(db_path)
    db.execute(SCHEMA)
    consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=broker, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    stop = stop or asyncio.Event()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for records in batches.values():
                for record in records:
                    apply(db, json.loads(record.value))
            if batches:
                db.commit()  # the mirror first, then the offsets: a crash re-applies, never skips
                await consumer.commit()
    finally:
        await consumer.stop()
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", required=True, help="host:port of the Kafka broker")
    parser.add_argument("--db", default="orders.db", help="SQLite file")
    parser.add_argument("--group", default="example-sqlite-mirror", help="consumer group")
    args = parser.parse_args()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await mirror(args.broker, args.db, args.group, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
