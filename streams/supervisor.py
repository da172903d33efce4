"""``talkstream run``: supervises the processes of the main job.

Starts the embedded broker when ``KAFKA_BROKER`` is unset (or, with
``--broker kafka``, a real one-node Apache Kafka with RocksDB tables), the
sandbox systems when their URLs are unset, and a worker (``talkstream worker``)
pointed at them; prints where everything listens; stops everything it started,
by PID, on Ctrl-C / SIGTERM or when the worker dies.

A broker it starts is new and empty, so the tables a worker kept on disk in an
earlier run (RocksDB) belong to a broker that is gone: they are removed first
(Faust would otherwise keep them as they were, or refuse them).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

from connectors.common.httpserver import wait_for_port_file

from streams.apache_kafka import ApacheKafka, ApacheKafkaError, ApacheKafkaUnavailable
from streams.embedded_broker import DIE_WITH_PARENT, EmbeddedBroker, EmbeddedBrokerError
from streams import runfile
from streams.settings import Settings


@dataclass
class Child:
    name: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def businessnxt_edit_example(url: str, client_id: str, client_secret: str, company: str,
                             order: str = "ord_000002") -> list[str]:
    """Two ready-to-paste shell lines: a token from the sandbox's OAuth2 endpoint, then a GraphQL
    edit of the Business NXT order linked to Customcrm order ``order``."""
    token = (f"TOKEN=$(curl -s -d grant_type=client_credentials -d client_id={client_id} "
             f"-d client_secret={client_secret} -d scope=business-graphql-service-api:access-group-based "
             f"{url}/connect/token | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')")
    mutation = (f'mutation {{ useCompany(no: {company}) {{ order_update(filter: {{information1: {{_eq: '
                f'\\"customcrm:order:{order}\\"}}}}, value: {{name: \\"Edited in Business NXT\\"}}) '
                f'{{ affectedRows }} }} }}')
    edit = (f"curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
            f"-d '{{\"query\": \"{mutation}\"}}' {url}/api/graphql-service")
    return [f"  try an edit:  {token}", f"                {edit}"]


@dataclass
class Supervisor:
    settings: Settings
    out: object = field(default=sys.stdout)
    broker: EmbeddedBroker | ApacheKafka | None = None
    #: "embedded" (Tansu) or "kafka" (a one-node Apache Kafka, RocksDB tables) when KAFKA_BROKER is unset
    broker_kind: str = "embedded"
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start_broker(self) -> str:
        if self.settings.kafka_broker:
            if self.broker_kind == "kafka":
                raise RuntimeError("--broker kafka starts its own Apache Kafka: unset KAFKA_BROKER, or leave "
                                   "--broker out to use the one KAFKA_BROKER names")
            self.say(f"broker: {self.settings.kafka_broker} (external)")
            return self.settings.kafka_broker
        if self.broker_kind == "kafka":
            return self._start_apache_kafka()
        self.broker = EmbeddedBroker(log_path=os.environ.get("TALKSTREAM_BROKER_LOG")).start()
        self.env["KAFKA_BROKER"] = self.broker.url
        # the embedded broker needs single-record batches (known; no self-check needed)
        self.env["TALKSTREAM_SINGLE_RECORD_BATCHES"] = "on"
        self.say(f"embedded broker listening on {self.broker.url} (pid {self.broker.pid})")
        self._forget_tables_of_earlier_runs()
        return self.broker.url

    def _start_apache_kafka(self) -> str:
        """The production engine on this machine: a one-node Apache Kafka and RocksDB tables."""
        store = os.environ.get("TALKSTREAM_STORE", "rocksdb://")
        if store.startswith("rocksdb"):
            try:
                import rocksdict  # noqa: F401
            except ImportError as exc:
                raise RuntimeError("RocksDB tables need rocksdict: pip install -e '.[rocksdb]' "
                                   "(or set TALKSTREAM_STORE=memory://)") from exc
        started = time.monotonic()
        self.broker = ApacheKafka(nodes=1, directory=None).start(progress=self.say)
        self.env.update(KAFKA_BROKER=self.broker.url, TALKSTREAM_STORE=store,
                        TALKSTREAM_SINGLE_RECORD_BATCHES="auto")  # the self-check finds exact offsets: off
        self.say(f"Apache Kafka {self.broker.version} listening on {self.broker.url} (pid {self.broker.pids[0]}, "
                 f"ready in {time.monotonic() - started:.1f} s; tables: {store})")
        self._forget_tables_of_earlier_runs()
        return self.broker.url

    def _forget_tables_of_earlier_runs(self) -> None:
        tables = os.path.join(self.settings.data_dir, f"{self.settings.app_id}-data")
        if os.path.isdir(tables):
            shutil.rmtree(tables)
            self.say(f"removed the tables of an earlier run in {tables} (their broker is gone)")

    def spawn(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> Child:
        env = {**self.env, **(extra_env or {})}
        # a session of its own: Ctrl-C in the terminal reaches only this supervisor, which stops
        # each child (SIGTERM, by PID); a child also dies with the supervisor (Linux)
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], env=env, preexec_fn=DIE_WITH_PARENT)
        child = Child(name, proc)
        self.children.append(child)
        return child

    def _port_file(self, system: str) -> str:
        """Where a sandbox says which port it got (none left over from an earlier run)."""
        os.makedirs(self.settings.data_dir, exist_ok=True)
        path = os.path.join(self.settings.data_dir, f"{system}-sandbox.port")
        if os.path.exists(path):
            os.remove(path)
        return path

    def _wait_healthy(self, child: Child, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with code {child.process.returncode}")
            try:
                if httpx.get(f"{url}/_sandbox/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{child.name} did not answer on {url} within {timeout:.0f} s")

    def start_sandboxes(self, seed: int) -> None:
        """Start the sandbox systems whose URL is not configured, and point the worker at them."""
        s = self.settings
        if not s.customcrm_url:
            token = "sandbox-token"
            port_file = self._port_file("customcrm")
            child = self.spawn("customcrm sandbox", ["sandbox", "customcrm", "--port", "0", "--port-file", port_file,
                                                     "--seed", str(seed), "--token", token, "--quiet"])
            url = f"http://127.0.0.1:{wait_for_port_file(port_file, child.alive, what=child.name)}"
            self._wait_healthy(child, url)
            self.env.update(TALKSTREAM_CUSTOMCRM_URL=url, TALKSTREAM_CUSTOMCRM_TOKEN=token)
            self.say(f"Customcrm sandbox:   {url}/api/v1  (token {token}, pid {child.pid})")
            self.say(f"  try an edit:  curl -s -X PATCH -H 'Authorization: Bearer {token}' "
                     f"-H 'Content-Type: application/json' -d '{{\"Name\": \"Edited in Customcrm\"}}' "
                     f"{url}/api/v1/orders/ord_000001")
        if not s.businessnxt_url:
            port_file = self._port_file("businessnxt")
            client_id, client_secret, company = "sandbox-client", "sandbox-secret", "1"
            key = (s.businessnxt_webhook_key.get_secret_value() if s.businessnxt_webhook_key
                   else secrets.token_urlsafe(24))
            webhook = f"http://127.0.0.1:{s.web_port}/webhooks/businessnxt"
            args = ["sandbox", "businessnxt", "--port", "0", "--port-file", port_file, "--seed", str(seed),
                    "--client-id", client_id, "--client-secret", client_secret, "--company", company,
                    "--timezone", s.timezone, "--quiet"]
            if s.web_enabled:
                args += ["--webhook-url", webhook]  # the key goes through the environment, not argv
            child = self.spawn("businessnxt sandbox", args, extra_env={"TALKSTREAM_SANDBOX_WEBHOOK_KEY": key})
            url = f"http://127.0.0.1:{wait_for_port_file(port_file, child.alive, what=child.name)}"
            self._wait_healthy(child, url)
            self.env.update(TALKSTREAM_BUSINESSNXT_URL=f"{url}/api/graphql-service",
                            TALKSTREAM_BUSINESSNXT_TOKEN_URL=f"{url}/connect/token",
                            TALKSTREAM_BUSINESSNXT_CLIENT_ID=client_id,
                            TALKSTREAM_BUSINESSNXT_CLIENT_SECRET=client_secret,
                            TALKSTREAM_BUSINESSNXT_COMPANY=company)
            if s.web_enabled:
                self.env["TALKSTREAM_BUSINESSNXT_WEBHOOK_KEY"] = key
            self.say(f"Businessnxt sandbox: {url}/api/graphql-service  (client {client_id} / {client_secret}, "
                     f"company {company}, token endpoint {url}/connect/token, pid {child.pid})")
            for line in businessnxt_edit_example(url, client_id, client_secret, company):
                self.say(line)

    def start_worker(self, loglevel: str = "info", logfile: str | None = None) -> Child:
        args = ["worker", "-l", loglevel]
        if logfile:
            args += ["-f", logfile]
        if not self.settings.web_enabled:
            args.append("--without-web")
        console = self.console_address()
        child = self.spawn("worker", args)
        self.say(f"worker started (pid {child.pid})" + (f", log: {logfile}" if logfile else ""))
        if console:
            self.say(f"console: {console}  (open it in a browser; the token after # stays in the browser)")
        return child

    def console_address(self) -> str | None:
        """The console's address with its token (``#token=``, never sent to a server); makes the
        token up when ``TALKSTREAM_CONSOLE_TOKEN`` is unset. None: no web server."""
        s = self.settings
        if not s.web_enabled:
            return None
        token = s.console_token.get_secret_value() if s.console_token else secrets.token_urlsafe(24)
        self.env["TALKSTREAM_CONSOLE_TOKEN"] = token
        host = "127.0.0.1" if s.web_host in ("0.0.0.0", "::", "") else s.web_host
        return f"http://{host}:{s.web_port}/console/#token={token}"

    def _watch(self, worker: Child, stop_requested: dict, tty: bool) -> int | None:
        """Show progress until a stop is requested (None) or the worker dies (its exit code)."""
        from rich.live import Live

        from streams.progress import Progress

        progress = Progress(f"http://{self.settings.web_host}:{self.settings.web_port}/status")
        live = Live(refresh_per_second=2, console=progress.console, transient=False) if tty else None
        last_line = 0.0
        try:
            if live:
                live.start()
            while stop_requested["signal"] is None:
                if not worker.alive():
                    self.say(f"worker exited with code {worker.process.returncode}")
                    return worker.process.returncode or 1
                status = progress.fetch() if self.settings.web_enabled else None
                if status:
                    progress.update(status)
                    message = progress.announce(status)
                    if live:
                        live.update(progress.table(status))
                        if message:
                            live.console.print(message)
                    else:
                        if message:
                            self.say(message)
                        if time.monotonic() - last_line >= 10:
                            self.say(progress.line(status))
                            last_line = time.monotonic()
                time.sleep(0.5)
            return None
        finally:
            if live:
                live.stop()

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if isinstance(self.broker, ApacheKafka):
            pids = self.broker.pids
            self.broker.stop()
            self.broker = None
            self.say(f"Apache Kafka stopped (pid {', '.join(map(str, pids))})")
        elif self.broker is not None:
            pid = self.broker.pid
            self.broker.stop()
            self.broker = None
            self.say(f"embedded broker stopped (pid {pid})")

    def run(self, loglevel: str = "info", seed: int = 200) -> int:
        """Run until Ctrl-C/SIGTERM or until a child exits; returns the exit code."""
        stop_requested = {"signal": None}

        def on_signal(signum, _frame) -> None:
            stop_requested["signal"] = signum

        old_int = signal.signal(signal.SIGINT, on_signal)
        old_term = signal.signal(signal.SIGTERM, on_signal)
        try:
            try:
                broker_url = self.start_broker()
                self.start_sandboxes(seed)
                # commands in another terminal of this folder find this broker (streams.runfile)
                runfile.write(self.settings, broker_url,
                              self.env.get("TALKSTREAM_SINGLE_RECORD_BATCHES", self.settings.single_record_batches),
                              f"http://{self.settings.web_host}:{self.settings.web_port}"
                              if self.settings.web_enabled else None)
            except (EmbeddedBrokerError, ApacheKafkaError, ApacheKafkaUnavailable, RuntimeError) as exc:
                self.say(f"error: {exc}")
                return 2
            tty = sys.stdout.isatty()
            logfile = os.path.join(self.settings.data_dir, "worker.log") if tty else None
            worker = self.start_worker(loglevel, logfile)
            code = self._watch(worker, stop_requested, tty)
            if code is None:
                self.say("stopping ...")
                return 0
            return code
        finally:
            runfile.remove(self.settings)
            self.stop()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
