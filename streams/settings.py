"""talkstream's configuration: environment variables read with pydantic-settings.

The variable names are a contract (README.md, Configuration). Secrets are
``SecretStr``: they never show up in a repr, a log line or on a topic.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TALKSTREAM_", extra="ignore", populate_by_name=True)

    # --- Kafka -----------------------------------------------------------------
    kafka_broker: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BROKER", "TALKSTREAM_KAFKA_BROKER"),
        description="kafka://host:port[;host:port]; unset: `talkstream run` starts the embedded broker.",
    )
    single_record_batches: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Send one record per produce batch on the topics read to their end offset (table "
        "changelogs, compacted topics). auto: on when the start-up self-check finds the broker's end offsets "
        "wrong for multi-record batches (the embedded broker).",
    )
    replication_factor: int = Field(
        default=1, ge=1,
        description="Replicas of every topic talkstream creates (its tables' changelogs included), with "
        "min.insync.replicas one less (at least 1); every producer uses acks=all. Production on a cluster of "
        "three or more brokers: 3 (a broker may die without losing or refusing a write).")
    app_id: str = Field(default="talkstream", description="Faust app id: consumer group and topic prefix.")
    partitions: int = Field(default=4, ge=1, description="Partitions of the topics talkstream creates.")
    fetch_max_wait_ms: int = Field(
        default=50, ge=1, le=1500,
        description="Longest a consumer fetch waits for new data. The embedded broker answers an idle fetch only "
        "when this expires (it does not return early when data arrives), so it bounds the latency of every hop.")
    gc_thresholds: tuple[int, int, int] = Field(
        default=(50000, 20, 10),
        description="Python's garbage collection thresholds (gc.set_threshold), as JSON, e.g. [50000,20,10]. "
        "Python's own (700, 10, 10) made a worker collect its young objects about 60 times a second during "
        "a load, and spend about a tenth of its time collecting.")
    commit_interval: float = Field(
        default=10.0, gt=0, le=60,
        description="Seconds between offset commits. A worker that dies reads again what came after its last "
        "commit (every handler is idempotent). A link state that a write's result will replace is put on the "
        "changelog only at the next commit, so the result usually comes first and a create costs one changelog "
        "message, not two.")
    store: str = Field(default="memory://", description="Faust table store: memory:// or rocksdb://.")
    data_dir: str = Field(default=".talkstream", description="Worker data directory (RocksDB tables).")
    web_port: int = Field(default=6066, description="Port of the worker's web server (webhooks, metrics).")
    web_host: str = Field(default="127.0.0.1", description="Bind address of the worker's web server.")
    web_enabled: bool = Field(default=True, description="Run the worker's web server.")
    console_token: SecretStr | None = Field(
        default=None, description="Turns the operator console (/console/ on the worker's web server) on: its API "
        "answers only `Authorization: Bearer <this token>`. Unset: the console is off (`talkstream run` makes one "
        "up and prints the address to open).")

    # --- Customcrm ------------------------------------------------------------------
    customcrm_url: str | None = Field(default=None, description="Customcrm base URL (before /api/v1).")
    customcrm_token: SecretStr | None = Field(default=None, description="Customcrm bearer token.")

    # --- Businessnxt ----------------------------------------------------------------
    businessnxt_url: str | None = Field(default=None, description="Business NXT GraphQL endpoint URL.")
    businessnxt_token_url: str | None = Field(default=None, description="OAuth2 token endpoint.")
    businessnxt_client_id: str | None = None
    businessnxt_client_secret: SecretStr | None = None
    businessnxt_company: int | None = Field(default=None, description="Company number for useCompany(no:).")
    businessnxt_webhook_key: SecretStr | None = Field(default=None, description="Webhook signature key; unset: webhooks off.")

    # --- Sync behaviour ---------------------------------------------------------
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between polls.")
    timezone: str = Field(default="Europe/Oslo", description="Business NXT server time zone.")
    internal_customer_no: int = Field(default=10000, description="customerNo of user-order orders.")
    mapping_file: str | None = Field(default=None, description="Path of the dataflow mapping (default: the packaged one).")
    poll_page_size: int = Field(default=500, ge=1, le=1000, description="Records per page when polling.")
    sink_batch_size: int = Field(default=100, ge=1, le=100, description="Records per write (one create / update "
                                 "call); a sink hands its writer up to 4 such writes at once.")
    sink_batch_wait: float = Field(default=0.2, ge=0, description="Seconds a sink waits to fill a batch.")
    park_timeout: float = Field(default=300.0, gt=0, description="Seconds (of worker uptime) an order waits "
                                "for its products to be linked before it is dead-lettered.")
    reference_wait: float = Field(default=60.0, ge=0, description="Seconds a polled page of orders waits, at "
                                  "most, for the products it names to be linked before it is published "
                                  "(0: never; see README, Pacing by reference).")
    write_retry_max: int = Field(default=8, ge=1, description="Attempts of a retryable write before dead-lettering.")
    ack_timeout: float = Field(default=30.0, gt=0, description="Seconds before a write with no result is re-sent.")
    customcrm_rate_limit: float = Field(default=9.0, gt=0, description="Customcrm requests per second (client side).")
    businessnxt_rate_limit: int = Field(default=540, gt=0, description="Business NXT requests per minute (client side).")
    webhook_upserts: bool = Field(default=True, description="Webhooks publish upserts too (not only deletes).")
    decision_log: bool = Field(default=True, description="Publish a decision record (talkstream.decisions) for "
                               "each link decision that writes, merges, parks, dead-letters or is held; "
                               "`talkstream explain` shows them.")
    breaker_max_writes: int = Field(default=1000, ge=0, description="Circuit breaker: updates and deletes per "
                                    "flow and target system a worker sends within TALKSTREAM_BREAKER_WINDOW "
                                    "before the flow trips (is held until `talkstream flows resume`); 0: off.")
    breaker_window: float = Field(default=300.0, gt=0, description="Circuit breaker: the sliding window, seconds.")

    def broker_url(self) -> str:
        return self.kafka_broker or "kafka://127.0.0.1:9092"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
