"""Do the speed changes earn their place? ``python -m bench.patches``.

On Apache Kafka (one node, RocksDB tables as in production) the initial load runs
with every speed change of ``connectors.common.patches.speed``, with none, and with
each one left out (``TALKSTREAM_PATCHES_OFF``), in rounds, in the same run: records/s
and the worker's CPU per record, each against the run with all of them. A change
earns its place when leaving it out costs 10 % or more of either. Prints a table and
writes ``bench/results/patches.json``; measures, asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.__main__ import ENGINE, EXTRA_ENV, RESULTS, initial_load
from connectors.common.patches import speed

console = Console()

#: A change must earn this much (records/s or worker CPU per record) to stay.
EARNS = 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description="the speed changes, with and without each, on Apache Kafka")
    parser.add_argument("--scale", type=float, default=0.5, help="1.0 = 10,000 products and orders")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--store", default="rocksdb://")
    args = parser.parse_args()
    ENGINE.update(broker_kind="kafka", store=args.store)
    n = max(10, int(10000 * args.scale))
    variants = {"all": "", "none": "speed", **{f"without {p.name}": p.name for p in speed.PATCHES}}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    tmp = Path(tempfile.mkdtemp(prefix="talkstream-bench-patches-"))
    for round_no in range(args.rounds):
        for name, off in variants.items():
            console.print(f"round {round_no + 1}/{args.rounds}: {name} ...")
            EXTRA_ENV.clear()
            if off:
                EXTRA_ENV["TALKSTREAM_PATCHES_OFF"] = off
            load = initial_load(n, tmp / f"{round_no}-{name.replace(' ', '-')}")
            runs[name].append({"records_per_s": load["records_per_s"],
                               "worker_cpu_ms_per_record": load["worker_cpu_ms_per_record"],
                               "messages_per_record": load["messages_per_record"]})
    base_rate = statistics.median(r["records_per_s"] for r in runs["all"])
    base_cpu = statistics.median(r["worker_cpu_ms_per_record"] for r in runs["all"])
    out = {"engine": dict(ENGINE), "records": n * 2 + n // 10, "rounds": args.rounds, "variants": {}}
    table = Table(title=f"speed changes on Apache Kafka ({args.store}), median of {args.rounds} rounds")
    for column in ("variant", "records/s", "vs all", "worker CPU ms/record", "vs all", "earns 10 %"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for name, results in runs.items():
        rate = statistics.median(r["records_per_s"] for r in results)
        cpu = statistics.median(r["worker_cpu_ms_per_record"] for r in results)
        # what leaving the change out costs: the speed lost, the CPU added
        rate_cost, cpu_cost = 1 - rate / base_rate, cpu / base_cpu - 1
        earns = None if name == "all" else (rate_cost >= EARNS or cpu_cost >= EARNS)
        out["variants"][name] = {"records_per_s": rate, "worker_cpu_ms_per_record": cpu, "runs": results,
                                 "records_per_s_lost_without": rate_cost, "cpu_added_without": cpu_cost,
                                 "earns_its_place": earns}
        table.add_row(name, f"{rate:,.0f}", f"{rate / base_rate:.2f}", f"{cpu:.3f}", f"{cpu / base_cpu:.2f}",
                      "" if earns is None else ("yes" if earns else "no"))
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "patches.json").write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"written: {RESULTS / 'patches.json'}")


if __name__ == "__main__":
    main()
