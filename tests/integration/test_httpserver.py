"""A sandbox server holds the port it listens on from the moment it has one: given port 0 it binds
one the system picks and says which (``--port-file``), so parallel tests never race for a port."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from connectors.common.httpserver import ServerThread, listen, wait_for_port_file
from connectors.customcrm.sandbox import create_app

ROOT = Path(__file__).resolve().parents[2]


def _taken(port: int) -> bool:
    """Something listens on ``port`` (a connection lingering in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _sandbox(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "streams.cli", "sandbox", "customcrm", "--quiet", *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_sandbox_given_port_0_serves_on_the_port_it_writes_to_its_port_file(tmp_path):
    port_file = tmp_path / "customcrm.port"
    proc = _sandbox("--port", "0", "--port-file", str(port_file))
    try:
        port = wait_for_port_file(port_file, lambda: proc.poll() is None, what="customcrm sandbox")
        assert _taken(port)
        assert httpx.get(f"http://127.0.0.1:{port}/_sandbox/health", timeout=10).status_code == 200
    finally:
        _stop(proc)


def test_a_sandbox_whose_port_is_taken_exits_and_the_wait_says_so(tmp_path):
    held = listen("127.0.0.1", 0)
    port_file = tmp_path / "customcrm.port"
    proc = _sandbox("--port", str(held.getsockname()[1]), "--port-file", str(port_file))
    try:
        with pytest.raises(RuntimeError, match="customcrm sandbox exited before it listened"):
            wait_for_port_file(port_file, lambda: proc.poll() is None, what="customcrm sandbox")
        assert not port_file.exists()
    finally:
        _stop(proc)
        held.close()


def test_a_server_thread_holds_its_port_before_it_starts():
    server = ServerThread(create_app(token="t", rate_limit=None))
    try:
        assert _taken(server.port)
        server.start()
        assert httpx.get(server.url + "/_sandbox/health", timeout=10).status_code == 200
    finally:
        server.stop()
    assert not _taken(server.port)
