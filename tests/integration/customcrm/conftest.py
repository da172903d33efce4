"""Fixtures of the Customcrm integration tests: real sandbox HTTP servers on loopback."""
from __future__ import annotations

from typing import Callable

import pytest

from connectors.common.httpserver import ServerThread
from connectors.customcrm.sandbox import create_app

TOKEN = "test-token"


@pytest.fixture
def start_sandbox() -> Callable[..., ServerThread]:
    """``start_sandbox(**create_app kwargs)`` -> a started ServerThread (stopped at teardown)."""
    servers: list[ServerThread] = []

    def start(**kwargs) -> ServerThread:
        kwargs.setdefault("token", TOKEN)
        server = ServerThread(create_app(**kwargs)).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def sandbox(start_sandbox) -> ServerThread:
    """A fresh, empty sandbox without a rate limit."""
    return start_sandbox(rate_limit=None)
