"""Shared fixtures: the embedded broker and Apache Kafka (one each per test session) and helpers.

Tests marked ``kafka`` need a real Apache Kafka (``java`` and ``mvn``), tests marked
``browser`` Debian's Chromium (``/usr/bin/chromium``) and Playwright for Python: where those
are missing they are skipped, with one line in the summary saying why, unless
``TALKSTREAM_REQUIRE_KAFKA`` or ``TALKSTREAM_REQUIRE_BROWSER`` is set (``.ci/run`` sets both),
which makes them fail.

Every process a fixture starts is stopped by its PID in the fixture's
teardown, which also runs when the test fails.
"""
from __future__ import annotations

import os
import uuid

import pytest

from streams.embedded_broker import EmbeddedBroker
from tests.support import (REQUIRE_BROWSER, REQUIRE_KAFKA, apache_kafka_missing, browser_missing,
                           require_apache_kafka)

#: marker -> (why it cannot run here, the variable that makes that a failure, what is skipped)
_NEEDS = {"kafka": (apache_kafka_missing, REQUIRE_KAFKA, "Apache Kafka profile"),
          "browser": (browser_missing, REQUIRE_BROWSER, "browser tests")}


def pytest_collection_modifyitems(config, items):
    for marker, (missing, required, _what) in _NEEDS.items():
        reason = missing()
        if reason is None or os.environ.get(required):
            continue  # a missing part then fails in the test (require_apache_kafka, require_browser)
        for item in items:
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    for missing, required, what in _NEEDS.values():
        reason = missing()
        if reason and not os.environ.get(required):
            skipped = sum(reason in str(report.longrepr) for report in terminalreporter.stats.get("skipped", []))
            if skipped:
                terminalreporter.write_line(f"{what} skipped ({skipped} tests): {reason}; "
                                            f"set {required}=1 to make that a failure")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """A running one-node Apache Kafka (KRaft) for the whole test session (of this process)."""
    from streams.apache_kafka import ApacheKafka

    require_apache_kafka()
    k = ApacheKafka(nodes=1, directory=str(tmp_path_factory.mktemp("kafka"))).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """A running embedded Tansu broker for the whole test session."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    b = EmbeddedBroker(log_path=str(log)).start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def unique():
    """A short unique suffix for topic, group and app names of one test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def pipeline_factory(tmp_path):
    """Whole pipelines (broker, both sandboxes, workers) for end-to-end and chaos tests."""
    from tests.e2e.harness import Pipeline

    made: list[Pipeline] = []

    def make(**kw) -> Pipeline:
        p = Pipeline(tmp_path / f"p{len(made)}", **kw)
        p.tmp.mkdir(parents=True, exist_ok=True)
        made.append(p)
        return p.start()

    try:
        yield make
    finally:
        for p in made:
            p.stop()
