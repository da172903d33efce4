"""Test helpers: waiting for conditions with a deadline (never a bare sleep)."""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Callable, TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    pass


def wait_until(
    condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, message: str = ""
) -> T:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = None  # type: ignore[assignment]
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise ConditionTimeout(f"condition not met within {timeout} s: {message or condition!r} (last={last!r})")


async def async_wait_until(
    condition: Callable[[], Awaitable[T]], *, timeout: float = 30.0, interval: float = 0.05, message: str = ""
) -> T:
    """Async twin of :func:`wait_until` for coroutine conditions."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: T = None  # type: ignore[assignment]
    while loop.time() < deadline:
        last = await condition()
        if last:
            return last
        await asyncio.sleep(interval)
    raise ConditionTimeout(f"condition not met within {timeout} s: {message or condition!r} (last={last!r})")


#: Set (``.ci/run`` does) to make a missing Apache Kafka a failure instead of a skip.
REQUIRE_KAFKA = "TALKSTREAM_REQUIRE_KAFKA"


def apache_kafka_missing() -> str | None:
    """Why Apache Kafka cannot run here (``java`` or ``mvn`` missing), or None."""
    from streams.apache_kafka import missing_tools

    return missing_tools()


def require_apache_kafka() -> None:
    """Skip the calling test (fail it where ``TALKSTREAM_REQUIRE_KAFKA`` is set) when Apache Kafka
    cannot run here."""
    import pytest

    reason = apache_kafka_missing()
    if reason:
        if os.environ.get(REQUIRE_KAFKA):
            pytest.fail(f"{reason} ({REQUIRE_KAFKA} is set)", pytrace=False)
        pytest.skip(reason)


#: Set (``.ci/run`` does) to make a missing Chromium a failure instead of a skip.
REQUIRE_BROWSER = "TALKSTREAM_REQUIRE_BROWSER"
#: Debian's Chromium (``apt-get install chromium``); Playwright drives it, never a browser of its own.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-quic"]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (Debian's Chromium or Playwright for Python missing), or None."""
    if not os.path.exists(CHROMIUM):
        return f"Chromium is not installed ({CHROMIUM}; apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    return None


def require_browser() -> None:
    """Skip the calling test (fail it where ``TALKSTREAM_REQUIRE_BROWSER`` is set) when the browser
    tests cannot run here."""
    import pytest

    reason = browser_missing()
    if reason:
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"{reason} ({REQUIRE_BROWSER} is set)", pytrace=False)
        pytest.skip(reason)
