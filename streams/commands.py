"""talkstream's own CLI commands, registered on the Faust app (``@app.command``).

Commands that manage processes (``run``, ``sandbox``) are synchronous: they
override ``__call__`` instead of running inside a Faust worker.
"""
from __future__ import annotations

import os
import sys

from click import Choice as click_choice
from faust.cli import AppCommand, argument, option

from streams.app import app
from streams.settings import get_settings


class SyncCommand(AppCommand):
    """An app command that runs its handler synchronously (no Faust worker)."""

    abstract = True

    def __call__(self, *args, **kwargs):  # type: ignore[override]
        code = self.run(*(self.args + args), **{**self.kwargs, **kwargs})
        raise SystemExit(code or 0)


@app.command(
    option("--worker-loglevel", default="info", help="Log level of the worker."),
    option("--seed", type=int, default=200, help="Sample records per sandbox (when the sandboxes are started)."),
    option("--broker", "broker_kind", type=click_choice(["embedded", "kafka"]), default="embedded",
           help="The broker to start when KAFKA_BROKER is unset: the embedded one, or a real one-node Apache "
                "Kafka (needs java and mvn; tables in RocksDB)."),
    base=SyncCommand,
)
def run(self, worker_loglevel: str, seed: int, broker_kind: str) -> int:
    """The main job: broker (embedded when KAFKA_BROKER is unset) and a worker; Ctrl-C stops all."""
    from streams.supervisor import Supervisor

    return Supervisor(get_settings(), broker_kind=broker_kind).run(loglevel=worker_loglevel, seed=seed)


@app.command(
    argument("system", type=str),
    option("--host", default="127.0.0.1", help="Bind address."),
    option("--port", type=int, default=0, help="Port (0: a free one)."),
    option("--seed", type=int, default=0, help="Seed N sample records, deterministic."),
    option("--token", default="sandbox-token", help="Customcrm: the accepted bearer token."),
    option("--rate-limit", default="100/10", help="Customcrm: requests per seconds per token, e.g. 100/10, or off."),
    option("--client-id", default="sandbox-client", help="Businessnxt: OAuth2 client id."),
    option("--client-secret", default="sandbox-secret", help="Businessnxt: OAuth2 client secret."),
    option("--company", type=int, default=1, help="Businessnxt: company number."),
    option("--webhook-url", default=None, help="Businessnxt: POST TableChange events here."),
    option("--webhook-key", default=None,
           help="Businessnxt: webhook signature key (default: $TALKSTREAM_SANDBOX_WEBHOOK_KEY)."),
    option("--timezone", default="Europe/Oslo", help="Businessnxt: server time zone."),
    option("--quiet", is_flag=True, default=False, help="Do not print where it listens."),
    option("--port-file", default=None,
           help="Write the port it listens on to this file once it listens (with --port 0: the one it got)."),
    base=SyncCommand,
)
def sandbox(self, system: str, host: str, port: int, seed: int, token: str, rate_limit: str, client_id: str,
            client_secret: str, company: int, webhook_url: str | None, webhook_key: str | None,
            timezone: str, quiet: bool, port_file: str | None) -> int:
    """Run one sandbox system (customcrm or businessnxt) as an HTTP server."""
    if system == "customcrm":
        from connectors.customcrm.sandbox import run as run_customcrm

        if rate_limit == "off":
            limit = None
        else:
            try:
                count, _, seconds = rate_limit.partition("/")
                limit = (int(count), float(seconds or 1))
            except ValueError:
                print(f"--rate-limit must look like 100/10 or off, not {rate_limit!r}", file=sys.stderr)
                return 2
        run_customcrm(host=host, port=port, token=token, seed=seed, rate_limit=limit, announce=not quiet,
                      port_file=port_file)
    elif system == "businessnxt":
        from connectors.businessnxt.sandbox import run as run_businessnxt

        webhook_key = webhook_key or os.environ.get("TALKSTREAM_SANDBOX_WEBHOOK_KEY")
        run_businessnxt(host=host, port=port, client_id=client_id, client_secret=client_secret,
                        company=company, seed=seed, webhook_url=webhook_url,
                        webhook_key=webhook_key, timezone=timezone, announce=not quiet,
                        port_file=port_file)
    else:
        print(f"unknown system {system!r}: use customcrm or businessnxt", file=sys.stderr)
        return 2
    return 0


def _mapping():
    from streams.mapping import load_mapping

    return load_mapping(get_settings().mapping_file)


def _console(width: int | None = None):
    """A rich console; wide when writing to a file or a pipe (no wrapping of ids), or ``width`` wide
    at most."""
    from rich.console import Console

    if sys.stdout.isatty():
        console = Console()
        return Console(width=min(width, console.width)) if width else console
    return Console(width=width or 240)


def _fail(message: str) -> None:
    print(f"talkstream: {message}", file=sys.stderr)
    raise SystemExit(2)


def _operate(coroutine):
    """Run one of ``streams.operations``' coroutines; its ``OperationError`` is one line and exit code 2."""
    import asyncio

    from streams.operations import OperationError

    try:
        return asyncio.run(coroutine)
    except OperationError as exc:
        _fail(str(exc))


def _operating_settings():
    """The settings, with the broker of the ``talkstream run`` in this folder when KAFKA_BROKER is
    unset (``streams.runfile``); one line and exit code 2 when there is none."""
    from streams.runfile import NoRunningBroker, with_running_broker

    try:
        return with_running_broker(get_settings())
    except NoRunningBroker as exc:
        _fail(str(exc))


@app.command(
    option("--system", required=True, type=str, help="customcrm or businessnxt"),
    option("--entity", required=True, type=str, help="order, product or user"),
    base=SyncCommand,
)
def resync(self, system: str, entity: str) -> int:
    """Reset a poller's watermark: its next poll re-reads every record of the source."""
    from streams.operations import resync as do_resync

    key = _operate(do_resync(_operating_settings(), _mapping(), system, entity))
    print(f"watermark {key} reset: the next poll re-reads all of {system} {entity}")
    return 0


@app.command(
    option("--flow", "flow_id", required=True, type=str, help="order-order, product-product or user-order"),
    option("--since", default="earliest", help="'earliest' or an ISO time (events observed since then)"),
    base=SyncCommand,
)
def replay(self, flow_id: str, since: str) -> int:
    """Re-feed a flow from its change topics (backfill / repair); safe while workers run."""
    from streams.operations import replay as do_replay

    sent = _operate(do_replay(_operating_settings(), _mapping(), flow_id, since))
    print(f"re-fed {sent} change events to flow {flow_id}")
    return 0


@app.command(
    argument("action", type=click_choice(["list", "redrive"]), default="list", required=False),
    option("--flow", "flow_id", default=None, help="only this flow"),
    option("--id", "ids", multiple=True, help="only these dead-letter ids (redrive)"),
    option("--json", "as_json", is_flag=True, default=False, help="machine-readable output"),
    base=SyncCommand,
)
def deadletters(self, action: str, flow_id: str | None, ids: tuple[str, ...], as_json: bool) -> int:
    """Inspect (list) or re-drive (redrive) dead letters."""
    import orjson

    from streams.operations import deadletters as load, redrive

    settings = _operating_settings()
    entries = _operate(load(settings))
    if flow_id:
        entries = [e for e in entries if e.flow == flow_id]
    if ids:
        entries = [e for e in entries if e.id in set(ids)]
    if action == "redrive":
        count = _operate(redrive(settings, entries))
        print(f"re-drove {count} dead letters")
        return 0
    if as_json:
        print(orjson.dumps([e.model_dump(mode="json", by_alias=True) for e in entries]).decode())
        return 0
    from rich.table import Table

    table = Table(title=f"dead letters ({len(entries)})")
    for col in ("id", "failed at", "stage", "flow", "key / record", "attempts", "reason"):
        table.add_column(col, overflow="fold")
    for e in entries:
        table.add_row(e.id[:12], e.failed_at.strftime("%Y-%m-%d %H:%M:%S"), e.stage, e.flow or "-",
                      e.link_key or e.record_id or "-", str(e.attempts), e.reason)
    _console().print(table)
    return 0


@app.command(
    argument("action", type=click_choice(["list", "pause", "resume"]), default="list", required=False),
    argument("flow_id", required=False, default=None),
    option("--json", "as_json", is_flag=True, default=False, help="machine-readable output"),
    base=SyncCommand,
)
def flows(self, action: str, flow_id: str | None, as_json: bool) -> int:
    """List each flow's state (running, paused, tripped) and why; pause or resume one."""
    import orjson

    from streams import controls
    from streams.operations import flow_states, set_flow_state

    settings = _operating_settings()
    if action != "list":
        if not flow_id:
            _fail(f"talkstream flows {action} FLOW: name the flow")
        control = controls.pause(flow_id) if action == "pause" else controls.resume(flow_id)
        _operate(set_flow_state(settings, _mapping(), control))
        print(f"flow {flow_id}: {control.describe()} (every worker obeys within a second or two)")
        return 0
    states = _operate(flow_states(settings, _mapping()))
    if as_json:
        print(orjson.dumps({fid: {"state": c.state, "why": c.describe(), "reason": c.reason, "detail": c.detail,
                                  "since": c.at.isoformat()} for fid, c in states.items()}).decode())
        return 0
    for fid, control in states.items():
        print(f"{fid:<17} {control.describe()}")
    return 0


@app.command(
    option("--system", type=click_choice(["customcrm", "businessnxt"]), required=True,
           help="the system the record is in"),
    option("--entity", required=True, help="its entity (order, product, user)"),
    option("--id", "record_id", required=True, help="its id (a Customcrm Id, a Business NXT order or product number)"),
    option("--json", "as_json", is_flag=True, default=False, help="machine-readable output"),
    base=SyncCommand,
)
def explain(self, system: str, entity: str, record_id: str, as_json: bool) -> int:
    """Each link the record belongs to: status and why it waits, per property the agreed value and where
    it came from, whether each side reported it and was written it, writes in flight."""
    import orjson

    from streams.explain import explain_link, links_of, render
    from streams.operations import decisions, link_states

    flows = {f.id for f in _mapping().flows
             if (system, entity) in ((f.source.system, f.source.entity), (f.target.system, f.target.entity))}
    if not flows:
        _fail(f"no flow maps {system} {entity}")
    settings = _operating_settings()
    links = [link for link in links_of(_operate(link_states(settings)), system, record_id)
             if link.get("flow") in flows]
    recent = _operate(decisions(settings, {link["key"] for link in links})) if links else {}
    explained = [explain_link(link, recent.get(link["key"], [])) for link in links]
    if as_json:
        print(orjson.dumps(explained, option=orjson.OPT_INDENT_2).decode())
        return 0 if explained else 1
    console = _console()
    for part in render(explained, system, record_id):
        console.print(part)
    return 0 if explained else 1


@app.command(
    option("--json", "as_json", is_flag=True, default=False, help="machine-readable output"),
    base=SyncCommand,
)
def status(self, as_json: bool) -> int:
    """Per flow: links, pending creates, parked, dead letters; last poll per poller; consumer lag."""
    import orjson

    from streams.operations import status as do_status

    data = _operate(do_status(_operating_settings(), _mapping()))
    if as_json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    _console(width=80).print(status_text(data))
    return 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def status_text(data: dict):
    """``talkstream status`` for a terminal: three narrow tables (fits 80 columns); ``--json`` has
    every detail."""
    from rich import box
    from rich.console import Group
    from rich.table import Table

    flows = Table(title="flows", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    cols = (("links", "links"), ("linked", "linked"), ("pending", "pending"), ("parked", "parked"),
            ("blocked", "blocked"), ("deleted", "deleted"), ("deadletters", "dead"))
    flows.add_column("flow", no_wrap=True)
    for _key, header in cols:
        flows.add_column(header, justify="right")
    for fid, row in data["flows"].items():
        flows.add_row(fid, *(f"{row.get(key, 0):,}" for key, _header in cols))
    held = [f"{fid}: {row['why']}" for fid, row in data["flows"].items() if row.get("state", "running") != "running"]
    flows.caption = "\n".join(held) if held else "every flow running"
    flows.caption_justify = "left"
    polls = Table(title="pollers: the newest change read", box=box.SIMPLE_HEAD, title_justify="left",
                  pad_edge=False)
    polls.add_column("poller", no_wrap=True)
    polls.add_column("change time (UTC)", no_wrap=True)
    polls.add_column("age", justify="right")
    for name, row in data["pollers"].items():
        when = (row.get("time") or "")[:19].replace("T", " ")
        polls.add_row(name, when or "not polled yet", _age(row.get("age_s")))
    lag = Table(title="consumer lag (messages)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    lag.add_column("topic", no_wrap=True)
    lag.add_column("lag", justify="right")
    for topic, n in data["lag"].items():
        lag.add_row(topic, f"{n:,}")
    return Group(flows, polls, lag)


@app.command(
    option("--mapping", "mapping_path", default=None, help="mapping file (default: the configured one)"),
    base=SyncCommand,
)
def docs(self, mapping_path: str | None) -> int:
    """Print the dataflow document (reStructuredText), every table filled from the mapping."""
    from streams.docs import render_default

    print(render_default(mapping_path or get_settings().mapping_file), end="")
    return 0
