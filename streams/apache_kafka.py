"""A real Apache Kafka (KRaft) for tests, benchmarks and local trials, from Maven Central jars.

``ApacheKafka(nodes=1)`` (or 3: combined broker+controller nodes) fetches the
broker's jars on first use (``mvn dependency:copy-dependencies`` on the
checked-in ``apache_kafka.pom.xml``, into ``~/.cache/talkstream/kafka-<version>``
or ``$TALKSTREAM_KAFKA_CACHE``), formats KRaft storage in a temporary directory,
starts one JVM per node on free 127.0.0.1 ports and waits until every node
answers a Kafka ApiVersions request and the cluster's metadata names every
broker (no sleeps). ``stop()`` stops exactly the PIDs it started; the JVMs also
die with the process that started them (Linux ``PR_SET_PDEATHSIG``).

``BROKER_SETTINGS`` are the broker settings of every node that production
shares (``docker-compose.yml`` sets the same; ``tests/unit/test_compose.py``
keeps them in step); ``SMALL_MACHINE_SETTINGS`` size a test broker for 2 cores.

Measured on the 2-core machine (Kafka 4.1.1, OpenJDK 17): the first fetch takes
about 18 s (Maven and 46 jars, 43 MB), a formatter JVM 0.7 s, a node is ready
about 1.6 s after its JVM started.
"""
from __future__ import annotations

import atexit
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from connectors.common.httpserver import free_port
from streams.embedded_broker import DIE_WITH_PARENT, kafka_api_versions_ok

POM = Path(__file__).with_name("apache_kafka.pom.xml")
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text()).group(1)

#: Broker settings of every node that production shares: ``docker-compose.yml`` sets the same
#: (``tests/unit/test_compose.py`` keeps them in step). Listeners, ids, directories and the
#: internal topics' replication are added per node and cluster size.
BROKER_SETTINGS: dict[str, str] = {
    "auto.create.topics.enable": "false",  # talkstream and Faust create their topics, with their configs
    "group.initial.rebalance.delay.ms": "0",  # a group's first join is not held 3 s
    "log.cleaner.backoff.ms": "500",  # the cleaner looks for work twice a second (default 15 s)
    "log.initial.task.delay.ms": "500",  # log tasks (the cleaner) start 0.5 s after start-up (default 30 s)
}

#: Sizes for a test broker on a 2-core machine (production keeps Kafka's defaults).
SMALL_MACHINE_SETTINGS: dict[str, str] = {
    "offsets.topic.num.partitions": "4",  # 50 by default: every group coordinator start loads them all
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "log.cleaner.dedupe.buffer.size": "16777216",  # the default takes 128 MiB of heap
}

#: JVM options of a node: a small heap, the serial collector and the C1 compiler only suit a
#: test broker on 2 cores (start-up 1.6 s); override with ``TALKSTREAM_KAFKA_JVM_OPTS``.
JVM_OPTS = "-Xms256m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.apache.name = org.apache.kafka
logger.apache.level = {level}
"""


#: Cluster starts tried when a node finds a port it was given taken (``Address already in use``).
PORT_ATTEMPTS = 3


class ApacheKafkaUnavailable(RuntimeError):
    """Apache Kafka cannot run here (no java or mvn, or the jars could not be fetched)."""


class ApacheKafkaError(RuntimeError):
    """A node did not start or stop as it should."""


def missing_tools() -> str | None:
    """A one-line reason when ``java`` or ``mvn`` is not on the PATH, else None."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        return (f"Apache Kafka needs {' and '.join(missing)} on the PATH (OpenJDK 17 or newer and Maven 3), "
                "to fetch and run the broker from Maven Central")
    return None


def cache_dir() -> Path:
    """Where the broker's jars are kept: ``$TALKSTREAM_KAFKA_CACHE`` or ``~/.cache/talkstream``."""
    base = os.environ.get("TALKSTREAM_KAFKA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "talkstream")
    return Path(base) / f"kafka-{KAFKA_VERSION}"


#: The jars the POM names (their dependencies come with them): the broker and the admin tools.
JARS = (f"kafka_2.13-{KAFKA_VERSION}.jar", f"kafka-tools-{KAFKA_VERSION}.jar")


def _complete(lib: Path) -> bool:
    """Does ``lib`` hold every jar the POM names (a cache of an older POM is fetched again)?"""
    return all((lib / jar).exists() for jar in JARS)


def fetch_jars(progress=None) -> Path:
    """The directory of the broker's jars, fetched with Maven when not cached yet.

    Safe with several processes at once (a file lock); a failed fetch leaves nothing behind."""
    import fcntl

    reason = missing_tools()
    if reason:
        raise ApacheKafkaUnavailable(reason)
    target = cache_dir() / "lib"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target):
            return target  # another process fetched them meanwhile
        if progress:
            progress(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {target.parent} (once)")
        partial = Path(tempfile.mkdtemp(prefix="lib-", dir=target.parent))
        try:
            result = subprocess.run(
                ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={partial}"],
                capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
            if result.returncode != 0 or not _complete(partial):
                last = (result.stdout + result.stderr).strip().splitlines()[-1:] or ["no output"]
                raise ApacheKafkaUnavailable(
                    f"fetching Apache Kafka {KAFKA_VERSION} with Maven failed (exit {result.returncode}): "
                    f"{last[0][:300]}")
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        except subprocess.TimeoutExpired as exc:
            raise ApacheKafkaUnavailable(f"fetching Apache Kafka {KAFKA_VERSION} with Maven took over 600 s") from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def cluster_id(random_bytes=os.urandom) -> str:
    """A new KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-``: the
    storage tool's argument parser would read such an id as an option.
    """
    while True:
        text = base64.urlsafe_b64encode(random_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


@dataclass
class Node:
    """One combined broker+controller node."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def properties(self) -> Path:
        return self.directory / "node.properties"

    @property
    def log(self) -> Path:
        return self.directory / "kafka.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ApacheKafka:
    """A running Apache Kafka cluster of ``nodes`` combined nodes. A context manager, or start()/stop()."""

    nodes: int = 1
    directory: str | None = None
    start_timeout: float = 90.0
    log_level: str = "WARN"
    jvm_opts: str = field(default_factory=lambda: os.environ.get("TALKSTREAM_KAFKA_JVM_OPTS", JVM_OPTS))
    members: list[Node] = field(default_factory=list, init=False)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, init=False, repr=False)
    _lib: Path | None = field(default=None, init=False, repr=False)

    version: str = field(default=KAFKA_VERSION, init=False)

    @property
    def replication(self) -> int:
        """The replication factor the cluster allows (internal topics use it)."""
        return min(self.nodes, 3)

    @property
    def bootstrap(self) -> str:
        """``host:port[,host:port]`` for aiokafka and librdkafka."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.members)

    @property
    def url(self) -> str:
        """``kafka://host:port[;host:port]`` for Faust (the KAFKA_BROKER format)."""
        return "kafka://" + ";".join(f"127.0.0.1:{n.port}" for n in self.members)

    @property
    def pid(self) -> int | None:
        """The first node's PID (the only one of a one-node cluster)."""
        return self.members[0].pid if self.members else None

    @property
    def pids(self) -> list[int]:
        return [n.pid for n in self.members if n.pid]

    # ------------------------------------------------------------------ configuration
    def _settings(self, node: Node, voters: str) -> dict[str, str]:
        internal = str(self.replication)
        min_isr = str(max(1, self.replication - 1))
        return {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.directory / "data"),
            "offsets.topic.replication.factor": internal,
            "transaction.state.log.replication.factor": internal,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": internal,
            "share.coordinator.state.topic.min.isr": min_isr,
            **BROKER_SETTINGS,
            **SMALL_MACHINE_SETTINGS,
        }

    def _java(self, main: str, *args: str, log: Path) -> list[str]:
        config = log.with_suffix(".log4j2.properties")
        config.write_text(LOG4J2.format(log=log, level=self.log_level))
        return ["java", *self.jvm_opts.split(), f"-Dlog4j2.configurationFile={config}",
                "-cp", f"{self._lib}/*", main, *args]

    # ------------------------------------------------------------------ life cycle
    def start(self, progress=None) -> "ApacheKafka":
        if self.members:
            return self
        self._lib = fetch_jars(progress)
        if self.directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="talkstream-kafka-")
            self.directory = self._tmp.name
        root = Path(self.directory)
        atexit.register(self.stop)
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                try:
                    self._start_cluster(root)
                    return self
                except ApacheKafkaError as exc:
                    # a port picked free was taken before the node bound it (another process of
                    # the machine, e.g. a parallel test, picked it too): new ports, new storage
                    if "Address already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                        raise
                    self._stop_nodes()
                    for node in self.members:
                        shutil.rmtree(node.directory, ignore_errors=True)
                    self.members = []
        except BaseException:
            self.stop()
            raise
        return self

    def _start_cluster(self, root: Path) -> None:
        """Pick the nodes' ports, format their storage, start them and wait until the cluster is ready."""
        self.members = [Node(i + 1, free_port(), free_port(), root / f"node{i + 1}") for i in range(self.nodes)]
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.members)
        cluster = cluster_id()
        for node in self.members:
            node.directory.mkdir(parents=True, exist_ok=True)
            node.properties.write_text("".join(f"{k}={v}\n" for k, v in self._settings(node, voters).items()))
            fmt = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", cluster, "-c",
                                            str(node.properties), log=node.directory / "format.log"),
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
            if fmt.returncode != 0:
                raise ApacheKafkaError(f"formatting node {node.node_id}'s storage failed: "
                                       f"{(fmt.stdout + fmt.stderr).strip()[-500:]}")
        for node in self.members:
            self.start_node(node, wait=False)
        self.wait_ready()

    def start_node(self, node: Node, wait: bool = True) -> None:
        """Start (or restart, after ``kill9``) one node's JVM on its formatted storage."""
        if node.alive():
            return
        self.members[node.node_id - 1] = node
        with open(node.directory / "stdout.log", "ab") as out:  # the child keeps its own descriptor
            node.process = subprocess.Popen(
                self._java("kafka.Kafka", str(node.properties), log=node.log),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=DIE_WITH_PARENT)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Until every running node answers ApiVersions and the metadata names every running broker."""
        deadline = time.monotonic() + self.start_timeout
        running = [n for n in self.members if n.process is not None]
        while time.monotonic() < deadline:
            for node in running:
                if node.process.poll() is not None:
                    raise ApacheKafkaError(
                        f"Apache Kafka node {node.node_id} exited with code {node.process.returncode} while "
                        f"starting (log: {node.log}): {self._last_error(node)}")
            if all(kafka_api_versions_ok("127.0.0.1", n.port, timeout=0.5) for n in running) \
                    and self._cluster_ready(running):
                return
            time.sleep(0.1)
        raise ApacheKafkaError(f"Apache Kafka did not answer within {self.start_timeout:.0f} s "
                               f"(logs in {self.directory})")

    def _cluster_ready(self, running: list[Node]) -> bool:
        """The metadata names every running broker, and a consumer group's coordinator can be found
        (the first look-up creates ``__consumer_offsets``: a worker's first join then finds it, instead
        of logging "GroupCoordinatorNotAvailableError" while it is made)."""
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient

        async def ready() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{running[0].port}", request_timeout_ms=3000)
            try:
                await admin.start()
                if len((await admin.describe_cluster())["brokers"]) < len(running):
                    return False
                await admin.describe_consumer_groups(["talkstream-ready-probe"])
                return True
            finally:
                await admin.close()

        try:
            return asyncio.run(asyncio.wait_for(ready(), 5))
        except Exception:
            return False

    @staticmethod
    def _last_error(node: Node) -> str:
        text = node.log.read_text(errors="replace") if node.log.exists() else ""
        errors = [line for line in text.splitlines() if " ERROR " in line or "Exception" in line]
        return (errors[-1] if errors else text.strip().splitlines()[-1:] or ["no log"])[:400]

    def active_controller(self) -> Node:
        """The node that is the KRaft quorum's leader now (``kafka-metadata-quorum describe --status``,
        asked of the running nodes)."""
        running = [n for n in self.members if n.alive()]
        log = Path(self.directory) / "metadata-quorum.log"
        result = subprocess.run(
            self._java("org.apache.kafka.tools.MetadataQuorumCommand", "--bootstrap-server",
                       ",".join(f"127.0.0.1:{n.port}" for n in running), "describe", "--status", log=log),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        leader = re.search(r"^LeaderId:\s+(\d+)", result.stdout, re.MULTILINE)
        if result.returncode != 0 or leader is None:
            raise ApacheKafkaError(f"kafka-metadata-quorum failed (exit {result.returncode}): "
                                   f"{(result.stderr or result.stdout).strip()[-300:]}")
        return next(n for n in self.members if n.node_id == int(leader.group(1)))

    def kill9(self, node: Node) -> None:
        """SIGKILL one node (its storage stays: ``start_node`` brings it back)."""
        if node.alive():
            node.process.kill()
            node.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every node this object started (SIGTERM, then SIGKILL), by PID, and remove temporary storage."""
        self._stop_nodes(timeout)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _stop_nodes(self, timeout: float = 20.0) -> None:
        for node in self.members:
            if node.alive():
                node.process.send_signal(signal.SIGTERM)
        for node in self.members:
            if node.process is not None and node.process.poll() is None:
                try:
                    node.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(10)
            node.process = None

    def __enter__(self) -> "ApacheKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use
    """``python -m streams.apache_kafka [NODES]``: run a cluster until Ctrl-C."""
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    started = time.monotonic()
    kafka = ApacheKafka(nodes=nodes).start(progress=lambda m: print(m, flush=True))
    print(f"Apache Kafka {KAFKA_VERSION} ({nodes} node{'s' * (nodes > 1)}) on {kafka.url} in "
          f"{time.monotonic() - started:.1f} s (pids {kafka.pids})", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        kafka.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
