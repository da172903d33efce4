"""talkstream's own CLI commands, registered on the Faust app (``@app.command``).

Commands that manage processes (``run``, ``sandbox``) are synchronous: they
override ``__call__`` instead of running inside a Faust worker.
"""
from __future__ import annotations

import os
import sys

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
    base=SyncCommand,
)
def run(self, worker_loglevel: str, seed: int) -> int:
    """The main job: broker (embedded when KAFKA_BROKER is unset) and a worker; Ctrl-C stops all."""
    from streams.supervisor import Supervisor

    return Supervisor(get_settings()).run(loglevel=worker_loglevel, seed=seed)


@app.command(
    argument("system", type=str),
    option("--host", default="127.0.0.1", help="Bind address."),
    option("--port", type=int, default=0, help="Port (0: a free one)."),
    option("--seed", type=int, default=0, help="Seed N sample records, deterministic."),
    option("--token", default="sandbox-token", help="Customcrm: the accepted bearer token."),
    option("--client-id", default="sandbox-client", help="Businessnxt: OAuth2 client id."),
    option("--client-secret", default="sandbox-secret", help="Businessnxt: OAuth2 client secret."),
    option("--company", type=int, default=1, help="Businessnxt: company number."),
    option("--webhook-url", default=None, help="Businessnxt: POST TableChange events here."),
    option("--webhook-key", default=None,
           help="Businessnxt: webhook signature key (default: $TALKSTREAM_SANDBOX_WEBHOOK_KEY)."),
    option("--timezone", default="Europe/Oslo", help="Businessnxt: server time zone."),
    base=SyncCommand,
)
def sandbox(self, system: str, host: str, port: int, seed: int, token: str, client_id: str,
            client_secret: str, company: int, webhook_url: str | None, webhook_key: str | None,
            timezone: str) -> int:
    """Run one sandbox system (customcrm or businessnxt) as an HTTP server."""
    if system == "customcrm":
        from connectors.customcrm.sandbox import run as run_customcrm

        run_customcrm(host=host, port=port, token=token, seed=seed)
    elif system == "businessnxt":
        from connectors.businessnxt.sandbox import run as run_businessnxt

        webhook_key = webhook_key or os.environ.get("TALKSTREAM_SANDBOX_WEBHOOK_KEY")
        run_businessnxt(host=host, port=port, client_id=client_id, client_secret=client_secret,
                        company=company, seed=seed, webhook_url=webhook_url,
                        webhook_key=webhook_key, timezone=timezone)
    else:
        print(f"unknown system {system!r}: use customcrm or businessnxt", file=sys.stderr)
        return 2
    return 0
