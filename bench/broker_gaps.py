"""Does a consumer following a partition see every record while producers write to it at once?
``python -m bench.broker_gaps [--records N] [--producers P]``

A diagnostic of the embedded broker, not a benchmark. P producers write N
records each to one partition of a fresh embedded broker while a consumer
follows it; then the partition is read again from the start. Tansu 0.6 can show
record N+1 to a fetch before record N when two producers write at once, so the
follower moves past N: measured 1 to 5 of 40,000 records with two producers,
none with one. Faust's consumers in talkstream read such a partition again
(``connectors.common.patches.faust_fixes``, seek-safe consuming), and so does the
product-reference follower (``streams.refs``).
"""
from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from connectors.common.kafka import ensure_topics, make_producer
from streams.embedded_broker import EmbeddedBroker

TOPIC = "bench.gaps"


async def measure(bootstrap: str, records: int, producers: int) -> dict:
    await ensure_topics(bootstrap, [TOPIC], partitions=1)
    clients = [make_producer(bootstrap, single_record_batches=True) for _ in range(producers)]
    for client in clients:
        await client.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    tp = TopicPartition(TOPIC, 0)
    consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    followed: list[int] = []
    written = asyncio.Event()

    async def produce(client) -> None:
        for i in range(records):
            await client.send(TOPIC, b"x" * 100, key=str(i).encode())
            if i % 50 == 0:
                await asyncio.sleep(0)
        await client.flush()

    async def write_all() -> None:
        await asyncio.gather(*(produce(c) for c in clients))
        written.set()

    async def follow() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            followed.extend(r.offset for recs in batch.values() for r in recs)
            if written.is_set() and not batch:
                break  # everything is written and nothing more comes: what it skipped, it never sees
    try:
        await asyncio.gather(write_all(), follow())
        await consumer.seek_to_beginning(tp)
        stored: list[int] = []
        while batch := await consumer.getmany(timeout_ms=1000, max_records=5000):
            stored.extend(r.offset for recs in batch.values() for r in recs)
    finally:
        for client in clients:
            await client.stop()
        await consumer.stop()
    skipped = sorted(set(stored) - set(followed))
    return {"written": records * producers, "stored": len(stored), "followed": len(set(followed)),
            "skipped_by_the_follower": skipped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000, help="records per producer")
    parser.add_argument("--producers", type=int, default=2)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        result = asyncio.run(measure(broker.bootstrap, args.records, args.producers))
    skipped = result["skipped_by_the_follower"]
    print(f"{result['written']} written by {args.producers} producer(s), {result['stored']} stored, "
          f"{result['followed']} seen by the follower; skipped: {len(skipped)} {skipped[:20]}")


if __name__ == "__main__":
    main()
