"""Typed API errors shared by every connector.

Each says what failed and why, and whether retrying can help. Writers map
them to ``WriteResult.status``; pollers retry the retryable ones and
dead-letter the rest.
"""
from __future__ import annotations

import random
from typing import Any


class ApiError(Exception):
    """A call to a system failed."""

    retryable: bool = False
    status_kind: str = "permanent"  # WriteResult.status for this error

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"(HTTP {self.status}{', ' + self.code if self.code else ''})")
        return " ".join(parts)


class AuthError(ApiError):
    """Missing, wrong or expired credentials (refresh once, then give up)."""


class ValidationError(ApiError):
    """The system rejected the data (field-level reasons in ``details``)."""


class ConflictError(ApiError):
    """Optimistic concurrency failed (version mismatch) or the record is in a conflicting state."""

    status_kind = "conflict"


class NotFoundError(ApiError):
    status_kind = "not_found"


class RateLimitedError(ApiError):
    """429; ``retry_after`` seconds when the server said so."""

    retryable = True
    status_kind = "retryable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after

    def wait(self) -> float | None:
        """Seconds to wait before the next attempt, when the server said (plus a little jitter)."""
        return None if self.retry_after is None else self.retry_after + random.uniform(0, 0.25)


class ServerError(ApiError):
    """5xx or an overloaded server."""

    retryable = True
    status_kind = "retryable"


class TimeoutError_(ApiError):
    """No answer in time: the outcome of a write is unknown."""

    retryable = True
    status_kind = "retryable"


class MalformedResponseError(ApiError):
    """The response could not be parsed; the outcome of a write is unknown."""

    retryable = True
    status_kind = "retryable"
