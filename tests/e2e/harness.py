"""End-to-end harness: a fresh broker (the embedded one, or a real Apache Kafka with
``broker="kafka"``), both sandbox systems and a real worker, each its own process,
stopped by PID (also when a test fails).

Tests talk to the systems through their public APIs (the connectors' clients)
and count requests with ``/_sandbox/stats``.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from connectors.businessnxt.client import BusinessnxtClient
from connectors.common.httpserver import free_port, wait_for_port_file
from connectors.customcrm.client import CustomcrmClient
from streams.apache_kafka import ApacheKafka
from streams.embedded_broker import EmbeddedBroker
from streams.supervisor import Child
from tests.support import require_apache_kafka, wait_until

CRM_TOKEN = "crm-token-e2e-5f1c9a"
CLIENT_ID, CLIENT_SECRET, COMPANY = "e2e-client", "bnxt-secret-e2e-8d2b7c", 1


@dataclass
class Proc(Child):
    """A child process of a test (stopped by its PID), with its log file."""

    log: Path = Path("/dev/null")
    web_port: int | None = None

    def kill9(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Pipeline:
    tmp: Path
    seed: int = 0  # Customcrm sample records
    bnxt_seed: int = 0  # Businessnxt rows that exist before the first sync (no flow owns them)
    webhooks: bool = False
    # the tests read Customcrm with the same token as the worker; its rate limit is tested on its own
    crm_rate_limit: str = "off"
    env_extra: dict = field(default_factory=dict)
    #: "embedded" (Tansu) or "kafka" (Apache Kafka, ``kafka_nodes`` combined nodes)
    broker_kind: str = "embedded"
    kafka_nodes: int = 1
    #: the worker's table store
    store: str = "memory://"
    broker: EmbeddedBroker | ApacheKafka | None = None
    procs: list[Proc] = field(default_factory=list)
    worker: Proc | None = None
    crm_url: str = ""
    bnxt_base: str = ""
    web_port: int = 0
    webhook_key: str = "whk-e2e-3a9f7d"
    app_id: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:6]}")
    worker_starts: int = 0

    # ---------------------------------------------------------------- processes
    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> Proc:
        log = self.tmp / f"{name}.log"
        fh = open(log, "ab")
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=Path(__file__).resolve().parents[2])
        p = Proc(name, proc, log=log)
        self.procs.append(p)
        return p

    def _healthy(self, proc: Proc, url: str) -> None:
        def ok() -> bool:
            assert proc.alive(), f"{proc.name} exited:\n{proc.output()[-3000:]}"
            try:
                return httpx.get(url + "/_sandbox/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(ok, timeout=30, message=f"{proc.name} healthy")

    def start(self) -> "Pipeline":
        if self.broker_kind == "kafka":
            require_apache_kafka()
            self.broker = ApacheKafka(nodes=self.kafka_nodes, directory=str(self.tmp / "kafka")).start()
        else:
            self.broker = EmbeddedBroker(log_path=None).start()
        self.web_port = free_port()
        # each sandbox binds a port the system gives it and says which (parallel tests never race)
        crm_port, bnxt_port = self.tmp / "customcrm.port", self.tmp / "businessnxt.port"
        crm = self._spawn("customcrm", ["sandbox", "customcrm", "--port", "0", "--port-file", str(crm_port),
                                        "--seed", str(self.seed), "--token", CRM_TOKEN,
                                        "--rate-limit", self.crm_rate_limit])
        args = ["sandbox", "businessnxt", "--port", "0", "--port-file", str(bnxt_port), "--seed",
                str(self.bnxt_seed), "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET,
                "--company", str(COMPANY)]
        if self.webhooks:
            args += ["--webhook-url", f"http://127.0.0.1:{self.web_port}/webhooks/businessnxt"]
        bnxt = self._spawn("businessnxt", args, env={"TALKSTREAM_SANDBOX_WEBHOOK_KEY": self.webhook_key})
        self.crm_url = f"http://127.0.0.1:{wait_for_port_file(crm_port, crm.alive, what=crm.name)}"
        self.bnxt_base = f"http://127.0.0.1:{wait_for_port_file(bnxt_port, bnxt.alive, what=bnxt.name)}"
        self._healthy(crm, self.crm_url)
        self._healthy(bnxt, self.bnxt_base)
        return self

    def worker_env(self) -> dict:
        env = {
            "KAFKA_BROKER": self.broker.url,
            # the embedded broker needs the protection; on Apache Kafka the self-check decides (off)
            "TALKSTREAM_SINGLE_RECORD_BATCHES": "on" if self.broker_kind == "embedded" else "auto",
            "TALKSTREAM_STORE": self.store,
            "TALKSTREAM_APP_ID": self.app_id,
            "TALKSTREAM_DATA_DIR": str(self.tmp / "data"),
            "TALKSTREAM_WEB_PORT": str(self.web_port),
            "TALKSTREAM_PARTITIONS": "4",
            "TALKSTREAM_POLL_INTERVAL": "0.5",
            "TALKSTREAM_CUSTOMCRM_URL": self.crm_url,
            "TALKSTREAM_CUSTOMCRM_TOKEN": CRM_TOKEN,
            "TALKSTREAM_BUSINESSNXT_URL": self.bnxt_base + "/api/graphql-service",
            "TALKSTREAM_BUSINESSNXT_TOKEN_URL": self.bnxt_base + "/connect/token",
            "TALKSTREAM_BUSINESSNXT_CLIENT_ID": CLIENT_ID,
            "TALKSTREAM_BUSINESSNXT_CLIENT_SECRET": CLIENT_SECRET,
            "TALKSTREAM_BUSINESSNXT_COMPANY": str(COMPANY),
            "TALKSTREAM_CUSTOMCRM_RATE_LIMIT": "50",
            "TALKSTREAM_PARK_TIMEOUT": "60",
            "TALKSTREAM_ACK_TIMEOUT": "10",
        }
        if self.webhooks:
            env["TALKSTREAM_BUSINESSNXT_WEBHOOK_KEY"] = self.webhook_key
        env.update(self.env_extra)
        return env

    def start_worker(self, wait_ready: bool = True) -> Proc:
        for attempt in range(3):
            if not self.webhooks:
                # picked as late as possible: parallel test processes pick ports too
                self.web_port = free_port()
            self.worker_starts += 1
            self.worker = self._spawn(f"worker-{self.worker_starts}", ["worker", "-l", "info"],
                                      env=self.worker_env())
            if not wait_ready:
                return self.worker
            wait_until(lambda: "talkstream worker ready" in self.worker.output() or not self.worker.alive(),
                       timeout=60, message="worker ready")
            if self.worker.alive():
                return self.worker
            if "address already in use" not in self.worker.output() or self.webhooks:
                break
        raise AssertionError(self.worker.output()[-5000:])

    def add_worker(self, name: str, *, web: bool = False, env: dict | None = None) -> Proc:
        """Another worker beside ``self.worker``, with its own data directory (a RocksDB store locks
        its own) and, with ``web``, its own web port (``proc.web_port``); not waited for."""
        extra = {"TALKSTREAM_DATA_DIR": str(self.tmp / f"data-{name}"), **(env or {})}
        port = None
        if web:
            port = int(extra.setdefault("TALKSTREAM_WEB_PORT", str(free_port())))
        proc = self._spawn(name, ["worker", "-l", "info", *([] if web else ["--without-web"])],
                           env={**self.worker_env(), **extra})
        proc.web_port = port
        return proc

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run a ``talkstream`` command against this pipeline (fails the test on a non-zero exit)."""
        result = subprocess.run([sys.executable, "-m", "streams.cli", *args], env={**os.environ, **self.worker_env()},
                                capture_output=True, text=True, timeout=timeout,
                                cwd=Path(__file__).resolve().parents[2])
        assert result.returncode == 0, f"talkstream {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def resync_all(self) -> None:
        from streams.mapping import load_mapping
        from streams.topics import entities

        for system, entity in entities(load_mapping()):
            self.cli("resync", "--system", system, "--entity", entity)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.broker is not None:
            self.broker.stop()

    # ---------------------------------------------------------------- system access
    def crm(self) -> CustomcrmClient:
        return CustomcrmClient(self.crm_url, CRM_TOKEN, rate_limit=None)

    def bnxt(self) -> BusinessnxtClient:
        return BusinessnxtClient(self.bnxt_base + "/api/graphql-service", self.bnxt_base + "/connect/token",
                                 CLIENT_ID, CLIENT_SECRET, COMPANY, rate_limit_per_min=None)

    def crm_stats(self) -> dict:
        return httpx.get(self.crm_url + "/_sandbox/stats").json()

    def bnxt_stats(self) -> dict:
        return httpx.get(self.bnxt_base + "/_sandbox/stats").json()


def run(coro):
    return asyncio.run(coro)


async def crm_all(p: Pipeline, resource: str) -> list[dict]:
    async with p.crm() as c:
        out, cursor = [], None
        while True:
            items, cursor = await c.list_changes(resource, limit=1000, cursor=cursor)
            out += items
            if not cursor or not items:
                return out


def crm_create(p: Pipeline, resource: str, data: dict) -> dict:
    """Create a Customcrm record as a person would (through the API)."""
    async def go():
        async with p.crm() as c:
            return await c.create(resource, data)
    return run(go())


def crm_update(p: Pipeline, resource: str, record_id: str, patch: dict) -> dict:
    """Edit a Customcrm record as a person would (through the API)."""
    async def go():
        async with p.crm() as c:
            return await c.update(resource, record_id, patch)
    return run(go())


def bnxt_update(p: Pipeline, table: str, key_field: str, key, values: dict) -> list[dict]:
    """Edit a Business NXT row as a person would (through the GraphQL API)."""
    async def go():
        async with p.bnxt() as b:
            return await b.update(table, [{key_field: {"_eq": key}}], [values])
    return run(go())


def metric(p: Pipeline, name: str) -> float:
    """One sample of the worker's ``/metrics`` (``name`` with its labels); 0 when it is not there
    or the worker does not answer."""
    try:
        text = httpx.get(f"http://127.0.0.1:{p.web_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def worker_status(p: Pipeline) -> dict:
    """The worker's ``/status``: links per flow and status, last polls, readiness."""
    return httpx.get(f"http://127.0.0.1:{p.web_port}/status", timeout=5).json()


async def bnxt_all(p: Pipeline, table: str) -> list[dict]:
    async with p.bnxt() as b:
        return await b.read_all(table, page_size=5000)


def stamped(rows: list[dict], prefix: str) -> dict[str, list[dict]]:
    """Businessnxt rows by the Customcrm id in their origin stamp (a list: duplicates show)."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        stamp = row.get("information1") or ""
        if stamp.startswith(prefix):
            out.setdefault(stamp[len(prefix):], []).append(row)
    return out


def writes(stats: dict) -> int:
    """Write requests counted by a sandbox (everything but reads)."""
    total = 0
    for label, by_status in stats.get("requests", {}).items():
        method = label.split(" ", 1)[0]
        if method in ("POST", "PATCH", "DELETE", "PUT") and "graphql" not in label and "token" not in label:
            total += sum(by_status.values())
    return total


def settle(p: Pipeline, quiet: float = 3.0) -> None:
    """Wait until neither system saw a write for ``quiet`` seconds (the worker caught up).

    A measurement of quiet, not a synchronisation: callers then assert exact counts.
    """
    last = (p.bnxt_stats()["mutations"], writes(p.crm_stats()))
    since = time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = (p.bnxt_stats()["mutations"], writes(p.crm_stats()))
        if now != last:
            last, since = now, time.monotonic()


def assert_in_sync(p: Pipeline) -> tuple[int, int, int]:
    """Every Customcrm record has exactly one Businessnxt record with equal mapped values."""
    from streams.mapping import DictRefResolver, load_mapping

    mapping = load_mapping()
    products, orders, users = (run(crm_all(p, r)) for r in ("products", "orders", "users"))
    b_products, b_orders = run(bnxt_all(p, "product")), run(bnxt_all(p, "order"))
    by_no: dict[str, list[dict]] = {}
    for row in b_products:
        by_no.setdefault(row["productNo"], []).append(row)
    refs = DictRefResolver({prd["Id"]: prd["Sku"] for prd in products})
    flow = mapping.flow("product-product")
    for prd in products:
        rows = by_no.get(prd["Sku"], [])
        assert len(rows) == 1, f"product {prd['Id']}: {len(rows)} Businessnxt products"
        assert flow.changed_properties(flow.to_canonical("source", prd),
                                       flow.to_canonical("target", rows[0])) == [], prd["Id"]
    for flow_id, records, prefix in (("order-order", orders, "customcrm:order:"),
                                     ("user-order", users, "customcrm:user:")):
        flow = mapping.flow(flow_id)
        rows_by_id = stamped(b_orders, prefix)
        assert set(rows_by_id) == {r["Id"] for r in records}, flow_id
        for rec in records:
            rows = rows_by_id[rec["Id"]]
            assert len(rows) == 1, f"{flow_id} {rec['Id']}: {len(rows)} Businessnxt orders"
            src = flow.to_canonical("source", rec)
            tgt = flow.to_canonical("target", rows[0], refs=refs)
            assert flow.changed_properties(src, tgt) == [], (rec["Id"], src, tgt)
    return len(products), len(orders), len(users)


def in_sync(p: Pipeline) -> bool:
    try:
        assert_in_sync(p)
        return True
    except AssertionError:
        return False


def wait_in_sync(p: Pipeline, timeout: float = 120.0) -> None:
    """Wait until both systems agree; on a timeout, fail with what differs and the links' status."""
    from tests.support import ConditionTimeout

    try:
        wait_until(lambda: in_sync(p), timeout=timeout, interval=0.5, message="in sync")
    except ConditionTimeout:
        status = p.cli("status", "--json").stdout
        try:
            assert_in_sync(p)
        except AssertionError as exc:
            raise AssertionError(f"not in sync after {timeout} s: {exc}\nstatus: {status}") from None
        raise


def wait_for(condition, timeout: float = 120.0, message: str = ""):
    return wait_until(condition, timeout=timeout, interval=0.25, message=message)


def elapsed(t0: float) -> float:
    return time.monotonic() - t0
