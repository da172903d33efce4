"""talkstream patches Faust and aiokafka internals: the versions are pinned, and a start-up check
finds every patched attribute or fails naming the package and its version."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from connectors.common import kafka_compat

ROOT = Path(__file__).resolve().parents[2]


def test_every_patched_attribute_exists_in_the_installed_versions():
    kafka_compat.check_patch_targets()


def test_a_missing_attribute_names_the_package_and_its_version(monkeypatch):
    from faust.topics import Topic

    monkeypatch.delattr(Topic, "_get_producer")
    with pytest.raises(kafka_compat.UnsupportedLibraryVersion) as err:
        kafka_compat.check_patch_targets()
    message = str(err.value)
    assert f"faust-streaming {metadata.version('faust-streaming')}" in message
    assert "faust.topics.Topic._get_producer" in message and kafka_compat.SUPPORTED in message


def test_a_missing_module_level_attribute_of_aiokafka_too(monkeypatch):
    from aiokafka import partitioner

    monkeypatch.delattr(partitioner, "murmur2")
    with pytest.raises(kafka_compat.UnsupportedLibraryVersion, match=r"aiokafka \S+ has no aiokafka.partitioner.murmur2"):
        kafka_compat.check_patch_targets()


def test_the_patched_libraries_have_upper_bounds_that_match_the_check():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package in ("faust-streaming", "aiokafka"):
        spec = next(d for d in deps if re.match(rf"{package}\b", d))
        assert "<" in spec, f"{package} has no upper bound"
        assert spec.replace(" ", "") in kafka_compat.SUPPORTED.replace(" ", ""), (spec, kafka_compat.SUPPORTED)
