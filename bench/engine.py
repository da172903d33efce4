"""The link decision's own cost, without a broker: ``python -m bench.engine``.

A micro-benchmark of the pure work the link agent does for each Customcrm
order of the initial load (the seeded orders, 1-5 lines each): read the change
event and make it canonical (``streams.canonical``), decide (``engine.handle_change``:
merge, derive the create), encode the command for Business NXT as the sink does
(``streams.encoding``), read the sink's result, make its record canonical and
record it (``engine.handle_result``), with the link stored as JSON in between as
the links table holds it. Prints microseconds per order; measures, asserts nothing.
Compare two commits by running it in both checkouts.
"""
from __future__ import annotations

import argparse
import statistics
import time

import orjson

from connectors.customcrm.sandbox import Store
from schemas.change import ChangeEvent
from schemas.command import WriteCommand, WriteResult
from streams import canonical, encoding, engine, linkcodec
from streams.mapping import load_mapping


class _Refs:
    """Product references as the worker's shared view holds them (both ways)."""

    def __init__(self, products: list[dict]) -> None:
        self.forward = {p["Id"]: p["Sku"] for p in products}
        self.back = {sku: pid for pid, sku in self.forward.items()}

    def to_target(self, source_id: str) -> str | None:
        return self.forward.get(source_id)

    def to_source(self, target_id: str) -> str | None:
        return self.back.get(target_id)


class _Settings:
    internal_customer_no = 10000


def one_pass(flow, messages: list[dict], refs: _Refs, policy: engine.Policy) -> float:
    """Seconds for change -> create -> result of every order once, from empty links."""
    links: dict[str, bytes] = {}
    t0 = time.perf_counter()
    for i, message in enumerate(messages):
        key = f"{flow.id}:{message['id']}"
        raw = links.get(key)
        event = ChangeEvent.model_validate(message)
        out = engine.handle_change(linkcodec.unpack(key, raw) if raw else None, flow,
                                   canonical.Change(flow, event, refs), key, now=1.0, refs=refs, policy=policy)
        links[key] = linkcodec.pack(out.link)
        command = WriteCommand.model_validate(orjson.loads(out.commands[0].to_bytes()))
        command = encoding.encode(command, flow, refs, policy.settings)
        result = WriteResult(command_id=command.command_id, flow=command.flow, link_key=key,
                             system="businessnxt", entity="order", op="create", status="ok",
                             target_id=str(1000 + i), version="2026-11-25T10:00:00.0000000Z",
                             record=command.data)
        result = WriteResult.model_validate(orjson.loads(result.to_bytes()))
        out = engine.handle_result(linkcodec.unpack(key, links[key]), flow, result,
                                   record=canonical.record_values(flow, result.system, result.record, refs),
                                   now=1.0, refs=refs, policy=policy)
        links[key] = linkcodec.pack(out.link)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    store = Store()
    store.seed(args.orders)
    orders = list(store.collections["orders"].records.values())
    products = list(store.collections["products"].records.values())
    messages = [orjson.loads(ChangeEvent(system="customcrm", entity="order", id=o["Id"], op="upsert",
                                         version=str(o.get("Version", 1)), data=o).to_bytes())
                for o in orders]
    flow = load_mapping().flow("order-order")
    refs, policy = _Refs(products), engine.Policy(settings=_Settings())
    one_pass(flow, messages, refs, policy)  # warm-up (caches, imports)
    runs = [one_pass(flow, messages, refs, policy) / len(messages) * 1e6 for _ in range(args.passes)]
    print(f"link decision per order: median {statistics.median(runs):.1f} us, "
          f"min {min(runs):.1f} us ({args.passes} passes of {len(messages)} orders)")


if __name__ == "__main__":
    main()
