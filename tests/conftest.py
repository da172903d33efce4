"""Shared fixtures: the embedded broker (one per test session) and helpers.

Every process a fixture starts is stopped by its PID in the fixture's
teardown, which also runs when the test fails.
"""
from __future__ import annotations

import uuid

import pytest

from streams.embedded_broker import EmbeddedBroker


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
