"""The worker's connections to the two systems and to Kafka, built once per worker.

``Runtime`` is a mode service started with the Faust app: it creates the
HTTP clients, the writers, the pollers and the webhook receiver from the
settings, and closes them on shutdown. Agents and timers get it through
``runtime()``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from mode import Service

from connectors.businessnxt.client import BusinessnxtClient
from connectors.businessnxt.poller import BusinessnxtPoller
from connectors.businessnxt.webhook import WebhookReceiver
from connectors.businessnxt.writer import BusinessnxtWriter
from connectors.common.deadletters import DeadLetters, acked_send
from connectors.common.kafka import KafkaPublisher, bootstrap_servers, make_producer
from connectors.common.watermarks import WatermarkStore
from connectors.customcrm.client import CustomcrmClient
from connectors.customcrm.poller import CustomcrmPoller
from connectors.customcrm.writer import CustomcrmWriter
from streams import metrics
from streams.settings import Settings

log = logging.getLogger(__name__)


class ConfigurationError(RuntimeError):
    pass


def _require(value: Any, name: str) -> Any:
    if value in (None, ""):
        raise ConfigurationError(f"{name} is not set (see README.md, Configuration)")
    return value


class Runtime(Service):
    """Clients, writers, pollers and the webhook receiver of one worker."""

    def __init__(self, settings: Settings, entities: list[tuple[str, str]], *,
                 single_record_batches: Callable[[], bool], pacer: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.entities = entities  # (system, entity) pairs the mapping's flows use
        self.single_record_batches = single_record_batches
        self.pacer = pacer  # when the Customcrm pollers publish a page (streams.pacing)
        self.customcrm: CustomcrmClient | None = None
        self.businessnxt: BusinessnxtClient | None = None
        self.writers: dict[str, Any] = {}
        self.pollers: dict[tuple[str, str], Any] = {}
        self.webhook: WebhookReceiver | None = None
        self.producer = None
        self.deadletters: DeadLetters | None = None
        self.ready = asyncio.Event()  # set once everything is built

    async def on_start(self) -> None:
        log.info("runtime: connecting to the systems")
        s = self.settings
        bootstrap = bootstrap_servers(s.broker_url())
        self.producer = make_producer(bootstrap, single_record_batches=self.single_record_batches())
        await self.producer.start()
        publisher = KafkaPublisher(self.producer)
        self.deadletters = DeadLetters(acked_send(self.producer), counted=metrics.count_dead_letter)
        watermarks = self.watermarks = WatermarkStore(bootstrap, self.producer)
        await watermarks.ensure()

        self.customcrm = CustomcrmClient(
            _require(s.customcrm_url, "TALKSTREAM_CUSTOMCRM_URL"),
            _require(s.customcrm_token, "TALKSTREAM_CUSTOMCRM_TOKEN").get_secret_value(),
            rate_limit=(max(1, int(s.customcrm_rate_limit * 10)), 10.0),
        )
        self.businessnxt = BusinessnxtClient(
            _require(s.businessnxt_url, "TALKSTREAM_BUSINESSNXT_URL"),
            _require(s.businessnxt_token_url, "TALKSTREAM_BUSINESSNXT_TOKEN_URL"),
            _require(s.businessnxt_client_id, "TALKSTREAM_BUSINESSNXT_CLIENT_ID"),
            _require(s.businessnxt_client_secret, "TALKSTREAM_BUSINESSNXT_CLIENT_SECRET").get_secret_value(),
            _require(s.businessnxt_company, "TALKSTREAM_BUSINESSNXT_COMPANY"),
            rate_limit_per_min=s.businessnxt_rate_limit,
        )
        self.writers = {
            "customcrm": CustomcrmWriter(self.customcrm, chunk_size=s.sink_batch_size),
            "businessnxt": BusinessnxtWriter(self.businessnxt, timezone=s.timezone, chunk_size=s.sink_batch_size),
        }
        for system, entity in self.entities:
            if system == "customcrm":
                poller = CustomcrmPoller(self.customcrm, publisher, watermarks, entity,
                                         page_size=s.poll_page_size, dead_letters=self.deadletters,
                                         pacer=self.pacer)
            else:
                poller = BusinessnxtPoller(self.businessnxt, publisher, watermarks, entity, timezone=s.timezone,
                                           page_size=s.poll_page_size, dead_letters=self.deadletters)
            self.pollers[(system, entity)] = poller
        if s.businessnxt_webhook_key is not None:
            self.webhook = WebhookReceiver(self.businessnxt, publisher, s.businessnxt_webhook_key.get_secret_value(),
                                           timezone=s.timezone, dead_letters=self.deadletters,
                                           upserts=s.webhook_upserts)
        self.ready.set()
        log.info("runtime: ready (%d pollers%s)", len(self.pollers), ", webhooks on" if self.webhook else "")

    async def on_stop(self) -> None:
        if getattr(self, "watermarks", None) is not None:
            await self.watermarks.close()
        for client in (self.customcrm, self.businessnxt):
            if client is not None:
                await client.aclose()
        if self.producer is not None:
            await self.producer.stop()
