"""Run an ASGI app (a sandbox) as a real HTTP server on loopback.

``ServerThread`` serves in a background thread of the current process (tests);
``serve`` runs in the foreground until Ctrl-C (``talkstream sandbox``).

Both bind their listening socket before anything else, so port 0 means the port
the system gave, held from that moment: a server never races another process for
a port it was told. A parent learns it from ``--port-file`` (``write_port_file``
here, ``wait_for_port_file`` there).
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for a server that binds it itself later, such as a JVM);
    a server of this project binds its own socket instead (``listen``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listen(host: str = "127.0.0.1", port: int = 0, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: one the system picks, held from now on)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def write_port_file(path: str | os.PathLike, port: int) -> None:
    """Say which port a server listens on, atomically (a reader never sees half a number)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)


def wait_for_port_file(path: str | os.PathLike, alive: Callable[[], bool], *, what: str,
                       timeout: float = 30.0) -> int:
    """The port a child server wrote to ``path`` (``--port-file``), waiting for it while the child
    is ``alive()``; a clear error when it exits or takes longer than ``timeout`` seconds."""
    path = Path(path)
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            text = path.read_text().strip()
            if text.isdigit():
                return int(text)
        if not alive():
            raise RuntimeError(f"{what} exited before it listened")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen within {timeout:.0f} s (no port in {path})")
        time.sleep(0.02)


def _config(app, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
        limit_concurrency=None,
        backlog=2048,
    )


class ServerThread:
    """An ASGI app served by uvicorn in a daemon thread; ``start()`` returns when it listens."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.app = app
        self.host = host
        self.socket = listen(host, port)
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(_config(app, self.host, self.port))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, name=f"http-{self.port}", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.socket]))
        finally:
            self.socket.close()

    def start(self, timeout: float = 15.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"HTTP server on {self.url} exited while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server on {self.url} did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        self.socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(app, host: str = "127.0.0.1", port: int = 0, *, listening: Callable[[int], None] | None = None) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; ``listening(port)`` is called once the socket
    listens (``port`` 0: the one the system gave), before the first request is served."""
    sock = listen(host, port)
    try:
        bound = sock.getsockname()[1]
        if listening is not None:
            listening(bound)
        uvicorn.Server(_config(app, host, bound)).run(sockets=[sock])
    finally:
        sock.close()
