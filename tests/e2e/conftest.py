"""Fixtures of the end-to-end tests: a whole pipeline per test."""
from __future__ import annotations

import pytest

from tests.e2e.harness import Pipeline


@pytest.fixture
def pipeline_factory(tmp_path):
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
