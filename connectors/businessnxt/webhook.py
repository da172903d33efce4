"""Businessnxt webhook receiver (framework-neutral core).

``WebhookReceiver.handle(raw_body, signature)`` verifies ``x-vwd-signature-v1``
(base64 HMAC-SHA256 of the raw body, constant-time compare), then for each
TableChange event fetches the changed row by primary key and publishes it as
a change event (origin ``webhook``): a change to an ``orderLine`` publishes
its order (after a line DELETE with a version of at least the deletion time,
since no timestamp of the order changed); a DELETE of an order / product publishes a tombstone (``op``
``delete``, ``data`` None, version = the event's UTC timestamp). Returns
``(http_status, json_body)``; a non-2xx makes the sender retry, so fetch or
publish failures answer 503. Duplicate deliveries publish the same version
again, which consumers treat as a no-op.

Mount it anywhere, e.g. a Faust view or :func:`starlette_endpoint`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from typing import Any

import orjson

from connectors.businessnxt.client import BusinessnxtClient, table_fields
from connectors.common.kafka import publish_events
from connectors.common.deadletters import DeadLetterSink, publish_all
from connectors.businessnxt.records import InvalidRow, KEY_FIELD, to_event, tombstone
from connectors.businessnxt.timezones import parse_utc, utc_version
from connectors.common.errors import ApiError
from schemas.change import ChangeEvent, change_topic
from schemas.deadletter import DeadLetter

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-vwd-signature-v1"


def compute_signature(raw_body: bytes, key: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), raw_body, hashlib.sha256).digest()).decode()


def verify_signature(raw_body: bytes, signature: str | None, key: str) -> bool:
    """Constant-time check of ``x-vwd-signature-v1``."""
    if not signature:
        return False
    return hmac.compare_digest(compute_signature(raw_body, key).encode(), signature.strip().encode())


def plan(event: dict[str, Any]) -> tuple[str, str, Any] | None:
    """TableChange -> (entity, action, key): action ``fetch`` or ``delete``; None = not ours."""
    table = event.get("tableIdentifier")
    kind = str(event.get("event", "")).upper()
    pks = event.get("primaryKeys") or []
    if not pks or not isinstance(pks[0], dict):
        raise ValueError("event without primaryKeys")
    pk = pks[0]
    if table == "orderLine":
        return ("order", "fetch", pk["orderNo"])  # the order is what talkstream publishes
    if table in KEY_FIELD:
        key = pk[KEY_FIELD[table]]
        return (table, "delete" if kind == "DELETE" else "fetch", key)
    return None


class WebhookReceiver:
    def __init__(self, client: BusinessnxtClient, publisher: Any, key: str, *, timezone: str = "Europe/Oslo",
                 dead_letters: DeadLetterSink | None = None, topics: dict[str, str] | None = None,
                 upserts: bool = True) -> None:
        """``topics`` overrides the change topic per entity; ``upserts=False``
        publishes only DELETE tombstones (when polling covers upserts)."""
        self.client = client
        self.publisher = publisher
        self._key = key
        self.tz = timezone
        self.dead_letters = dead_letters
        self.topics = topics or {}
        self.upserts = upserts

    def __repr__(self) -> str:
        return "WebhookReceiver(key=<hidden>)"

    async def handle(self, raw_body: bytes, signature: str | None) -> tuple[int, dict]:
        if not verify_signature(raw_body, signature, self._key):
            log.warning("businessnxt webhook rejected: %s signature (%d bytes)",
                        "missing" if not signature else "invalid", len(raw_body))
            return 401, {"error": "invalid signature"}
        try:
            payload = orjson.loads(raw_body)
            events = payload if isinstance(payload, list) else [payload]
            plans = [plan(e) for e in events]
        except (orjson.JSONDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            await publish_all(self.dead_letters, [DeadLetter(
                stage="webhook", system="businessnxt", reason=f"unparseable webhook payload: {exc}",
                error_type="unparseable_payload", payload=raw_body.decode(errors="replace"))])
            return 400, {"error": "unparseable payload"}

        by_entity: dict[str, list[ChangeEvent]] = {}
        fetch: dict[str, list[Any]] = {}
        # A deleted order line changes its order without touching any timestamp:
        # the order's version is lifted to the deletion time so consumers see a new version.
        floor: dict[Any, str] = {}
        for ev, p in zip(events, plans):
            if p is None:
                continue
            entity, action, key = p
            if action == "delete":
                ts = ev.get("timestamp")
                by_entity.setdefault(entity, []).append(
                    tombstone(entity, key, utc_version(ts) if ts else None, origin="webhook"))
            elif self.upserts:
                fetch.setdefault(entity, []).append(key)
                if ev.get("tableIdentifier") == "orderLine" and str(ev.get("event")).upper() == "DELETE" \
                        and ev.get("timestamp"):
                    ts = utc_version(ev["timestamp"])
                    floor[key] = max(floor.get(key, ts), ts)

        letters: list[DeadLetter] = []
        try:
            for entity, keys in fetch.items():
                rows = await self.client.read_by_keys(entity, keys, fields=table_fields(entity))
                for key in dict.fromkeys(keys):
                    row = rows.get(key)
                    if row is None:
                        continue  # deleted since: its DELETE event follows
                    try:
                        event = to_event(entity, row, self.tz, origin="webhook")
                        if entity == "order" and key in floor and (event.version or "") < floor[key]:
                            event = event.model_copy(update={"version": floor[key],
                                                             "modified_at": parse_utc(floor[key])})
                        by_entity.setdefault(entity, []).append(event)
                    except InvalidRow as exc:
                        letters.append(DeadLetter(stage="webhook", system="businessnxt", entity=entity,
                                                  record_id=str(key), reason=str(exc),
                                                  error_type="validation_error", payload=row))
        except ApiError as exc:
            log.warning("businessnxt webhook: fetching changed rows failed, sender will retry: %s", exc)
            return 503, {"error": "fetch failed"}
        try:
            for entity, evs in by_entity.items():
                await publish_events(self.publisher, evs, self.topics.get(entity) or change_topic("businessnxt", entity))
            await publish_all(self.dead_letters, letters)
        except Exception as exc:  # broker trouble: let the sender retry
            log.warning("businessnxt webhook: publishing failed, sender will retry: %s", type(exc).__name__)
            return 503, {"error": "publish failed"}
        return 200, {"published": sum(len(v) for v in by_entity.values())}


def starlette_endpoint(receiver: WebhookReceiver):
    """A Starlette endpoint for the receiver (tests, standalone use)."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    async def endpoint(request: Request):
        status, body = await receiver.handle(await request.body(), request.headers.get(SIGNATURE_HEADER))
        return JSONResponse(body, status_code=status)

    return endpoint
