"""Repeat the two-worker initial load and explain any run that stops short: ``python -m bench.two_workers``.

A diagnostic for rare losses, not a benchmark: each run seeds N products, N
orders and N/10 users, starts a worker, starts a second one once the first has
written ``--join-at`` of the products, and waits for every record in Business
NXT. A run in which no new row appears for ``--stall`` seconds is a stall: the
workers dump their asyncio tasks to their logs (SIGUSR1), and this prints the
group's lag (``talkstream status``), the records missing in Business NXT and,
for the first few, their flow events, commands, last link state and (orders)
whether their products' references are on ``talkstream.product-refs``. The
repetition stops at the first stall; the run's directory (worker logs) stays.

This is how the second loss path with two workers (records fetched before any
commit and left while the flow was stopped) was found; see
``connectors/common/patches/faust_fixes.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from bench.__main__ import EXTRA_ENV, fast_env
from connectors.common.kafka import read_all
from schemas.command import command_members
from streams import flowmessages
from tests.e2e.harness import Pipeline, bnxt_all, crm_all, run, stamped


def one_run(seed: int, join_at: float, stall: float, engine: dict | None = None) -> bool:
    """One load with a second worker joining; True when every record arrived. ``engine``: the
    Pipeline's ``broker_kind`` and ``store`` (default: the embedded broker, in-memory tables)."""
    tmp = Path(tempfile.mkdtemp(prefix="talkstream-two-workers-"))
    p = Pipeline(tmp, seed=seed, crm_rate_limit="off", env_extra=fast_env({"TALKSTREAM_POLL_INTERVAL": "1.0"}),
                 **(engine or {}))
    p.start()
    records = seed * 2 + seed // 10
    try:
        p.start_worker()
        t0 = time.monotonic()
        while p.bnxt_stats()["rows"]["product"] < seed * join_at:
            time.sleep(0.2)
        p.add_worker("worker-2")
        last, last_change = -1, time.monotonic()
        while True:
            rows = p.bnxt_stats()["rows"]
            written = rows["product"] + rows["order"]
            if written >= records:
                print(f"complete: {records} records in {time.monotonic() - t0:.1f} s ({tmp})", flush=True)
                return True
            if written != last:
                last, last_change = written, time.monotonic()
            elif time.monotonic() - last_change > stall:
                print(f"STALL: no new row for {stall:.0f} s; rows {rows} ({tmp})", flush=True)
                explain(p)
                return False
            time.sleep(1.0)
    finally:
        p.stop()


def explain(p: Pipeline) -> None:
    for proc in p.procs:
        if proc.name.startswith("worker") and proc.alive():
            os.kill(proc.process.pid, signal.SIGUSR1)  # mode dumps every task's stack to the log
    status = json.loads(p.cli("status", "--json").stdout)
    print("lag:", status.get("lag"))
    products, orders, users = (run(crm_all(p, r)) for r in ("products", "orders", "users"))
    b_products, b_orders = run(bnxt_all(p, "product")), run(bnxt_all(p, "order"))
    product_nos = {row["productNo"] for row in b_products}
    from_orders, from_users = stamped(b_orders, "customcrm:order:"), stamped(b_orders, "customcrm:user:")
    missing = {
        "product-product": [x["Sku"] for x in products if x["Sku"] not in product_nos],
        "order-order": [x["Id"] for x in orders if x["Id"] not in from_orders],
        "user-order": [x["Id"] for x in users if x["Id"] not in from_users],
    }
    for flow, ids in missing.items():
        print(f"missing {flow}: {len(ids)} {ids[:10]}")
    keys = [f"{flow}:{ident}" for flow, ids in missing.items() for ident in ids[:3]]
    lines = {o["Id"]: [line["ProductId"] for line in o.get("Lines") or []] for o in orders}
    run(_trace(p, keys, {ident: lines[ident] for ident in missing["order-order"][:3]}))


async def _trace(p: Pipeline, keys: list[str], order_products: dict[str, list[str]]) -> None:
    bootstrap = p.broker.bootstrap
    flow = await read_all(bootstrap, "talkstream.flow.events", timeout=120)
    links = await read_all(bootstrap, f"{p.app_id}-links-changelog", timeout=120)
    commands = [record for topic in ("talkstream.businessnxt.product.commands",
                                     "talkstream.businessnxt.order.commands")
                for record in await read_all(bootstrap, topic, timeout=120)]
    for key in keys:
        table_key = json.dumps(key).encode()  # the table's keys are JSON
        print(f"== {key}")
        for partition, offset, k, value in flow:
            for member_key, message in flowmessages.unpack(k, value):  # a batch: ticks or results of many links
                if member_key == key:
                    print(f"  flow event [{partition}] @{offset}: {message['kind']}")
        print(f"  commands: {sum(1 for _p, _o, _k, v in commands for c in command_members(v) if c.get('link_key') == key)}")
        states = [value for _p, _o, k, value in links if k == table_key]
        print(f"  link writes: {len(states)}; last: {states[-1][:1500] if states else None}")
    refs = {k.decode() for _p, _o, k, _v in await read_all(bootstrap, "talkstream.product-refs", timeout=120) if k}
    for order, products in order_products.items():
        print(f"  order {order}: product references on the topic "
              f"{ {pid: f'c:{pid}' in refs for pid in products} }")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=10000, help="products and orders per run")
    parser.add_argument("--join-at", type=float, default=0.0, help="share of products written before the join")
    parser.add_argument("--stall", type=float, default=60.0, help="seconds without a new row that count as a stall")
    parser.add_argument("--broker", choices=["embedded", "kafka"], default="embedded")
    parser.add_argument("--store", choices=["memory://", "rocksdb://"], default="memory://")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a worker setting (repeatable), e.g. TALKSTREAM_PATCHES_OFF=seek-safe-consuming")
    args = parser.parse_args()
    EXTRA_ENV.update(item.split("=", 1) for item in args.env)
    engine = {"broker_kind": args.broker, "store": args.store}
    for i in range(1, args.runs + 1):
        print(f"run {i} of {args.runs}", flush=True)
        if not one_run(args.seed, args.join_at, args.stall, engine):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
