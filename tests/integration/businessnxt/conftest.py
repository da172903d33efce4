"""Fixtures for the Businessnxt integration tests: real sandbox HTTP servers,
clients, Kafka producers on the session broker. Everything started here is
stopped in teardown (also when the test fails)."""
from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest

from connectors.businessnxt.client import BusinessnxtClient
from connectors.businessnxt.sandbox import create_app
from connectors.common.httpserver import ServerThread
from connectors.common.kafka import make_producer

pytestmark = pytest.mark.integration


class Sandbox:
    def __init__(self, server: ServerThread, app: Any) -> None:
        self.server = server
        self.app = app
        self.state = app.state.sandbox
        self.url = server.url + "/api/graphql-service"
        self.token_url = server.url + "/connect/token"
        self.base = server.url
        self.http = httpx.Client(timeout=30)  # one client: a new one per call costs an SSL context

    def close(self) -> None:
        self.http.close()

    def token(self) -> str:
        r = self.http.post(self.token_url, data={"grant_type": "client_credentials", "client_id": "sandbox-client",
                                             "client_secret": "sandbox-secret"})
        r.raise_for_status()
        return r.json()["access_token"]

    def gql(self, query: str, variables: dict | None = None, *, token: str | None = None) -> dict:
        """A person in the ERP (own token), synchronous."""
        token = token or self.token()
        r = self.http.post(self.url, json={"query": query, "variables": variables or {}},
                           headers={"authorization": f"Bearer {token}"})
        r.raise_for_status()
        return r.json()

    def client(self, **kw) -> BusinessnxtClient:
        opts = dict(timeout=5.0, backoff_initial=0.01, backoff_max=0.2)
        opts.update(kw)
        return BusinessnxtClient(self.url, self.token_url, "sandbox-client", "sandbox-secret",
                                 self.state.company, **opts)

    def faults(self, **kw) -> None:
        self.http.post(self.base + "/_sandbox/faults", json=kw).raise_for_status()

    def clear_faults(self) -> None:
        self.http.delete(self.base + "/_sandbox/faults").raise_for_status()

    def stats(self) -> dict:
        return self.http.get(self.base + "/_sandbox/stats").json()


@pytest.fixture
def sandbox_factory():
    started: list[Sandbox] = []

    def make(**kw) -> Sandbox:
        app = create_app(**kw)
        sb = Sandbox(ServerThread(app).start(), app)
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.close()
        sb.server.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    return sandbox_factory(seed=20)


@pytest.fixture
async def producer(broker):
    p = make_producer(broker.bootstrap, single_record_batches=True)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@contextlib.asynccontextmanager
async def closing(client: BusinessnxtClient):
    try:
        yield client
    finally:
        await client.aclose()


def receiver_app(bootstrap: str, sb: Sandbox, key: str, *, topics: dict[str, str], upserts: bool = True,
                 dead_letter_topic: str | None = None):
    """A tiny Starlette app mounting the WebhookReceiver at ``/webhook``; its
    producer and client live on the server's own event loop (lifespan)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from connectors.common.deadletters import DeadLetters, acked_send
    from connectors.businessnxt.webhook import WebhookReceiver, starlette_endpoint
    from connectors.common.kafka import KafkaPublisher

    holder: dict[str, Any] = {}

    async def endpoint(request):
        return await holder["endpoint"](request)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        producer = make_producer(bootstrap, single_record_batches=True)
        await producer.start()
        client = sb.client()
        dls = DeadLetters(acked_send(producer, dead_letter_topic)) if dead_letter_topic else None
        receiver = WebhookReceiver(client, KafkaPublisher(producer), key, timezone=sb.state.timezone,
                                   dead_letters=dls, topics=topics, upserts=upserts)
        holder["endpoint"] = starlette_endpoint(receiver)
        try:
            yield
        finally:
            await client.aclose()
            await producer.stop()

    return Starlette(routes=[Route("/webhook", endpoint, methods=["POST"])], lifespan=lifespan)


@pytest.fixture
def server_factory():
    started: list[ServerThread] = []

    def make(app, port: int = 0) -> ServerThread:
        srv = ServerThread(app, port=port).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
