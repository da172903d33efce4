"""The Customcrm sandbox: an in-memory Customcrm serving ``docs/contracts/customcrm-api.md``.

``create_app()`` builds the Starlette app (state in ``app.state.sandbox``, a
:class:`Sandbox`); ``run()`` serves it in the foreground (CLI); both in ``server``.
The record store (:class:`Store`, in ``store``) knows nothing about HTTP; the handlers translate
between HTTP and store calls, the :class:`RateLimiter` and the idempotency
table. Fault injection and request statistics come from
``connectors.common.sandbox``.

Decisions the contract leaves open (documented in ``openapi.json`` too):

- ``Lines[].ProductId`` must be the ``Id`` of an existing product (a
  soft-deleted one included: old orders keep referencing it); checked when
  ``Lines`` are written, 422 otherwise.
- ``Sku`` (exact) and ``Email`` (case-insensitive) uniqueness failures are
  ``422 validation_error`` with the property in ``fields``.
- A PATCH that changes nothing returns the record and does not bump
  ``Version``/``ModifiedAt``. ``null`` in a merge patch removes the property,
  i.e. resets it to its default (``required`` for required properties).
- ``DELETE`` of an already deleted record is ``204`` before ``If-Match`` is
  checked (a retried delete must not fail).
- Idempotency keys are scoped per resource; only successful creates (201) are
  remembered (a rejected create can be retried with a corrected body).
- In a bulk response a delete's result carries the deleted record.
- Price and StockQuantity default to ``"0"``; Order Status to ``"open"``.
- ``CustomerNo`` and ``LineNo`` are bounded to 2^31-1.
"""
from __future__ import annotations

from connectors.customcrm.sandbox.openapi import openapi_document
from connectors.customcrm.sandbox.server import RateLimiter, Sandbox, create_app, endpoint_label, run
from connectors.customcrm.sandbox.store import (ApiFailure, Store, decode_cursor, encode_cursor, parse_if_match,
                                                parse_ts)

__all__ = ["ApiFailure", "RateLimiter", "Sandbox", "Store", "create_app", "decode_cursor", "encode_cursor",
           "endpoint_label", "openapi_document", "parse_if_match", "parse_ts", "run"]
