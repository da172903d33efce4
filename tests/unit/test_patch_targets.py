"""talkstream patches Faust and aiokafka internals: the versions are pinned, and a start-up check
finds every patched attribute or fails naming the package and its version."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from connectors.common import patches

ROOT = Path(__file__).resolve().parents[2]


def test_every_patched_attribute_exists_in_the_installed_versions():
    patches.check_patch_targets()


def test_a_missing_attribute_names_the_package_and_its_version(monkeypatch):
    from faust.topics import Topic

    monkeypatch.delattr(Topic, "_get_producer")
    with pytest.raises(patches.UnsupportedLibraryVersion) as err:
        patches.check_patch_targets()
    message = str(err.value)
    assert f"faust-streaming {metadata.version('faust-streaming')}" in message
    assert "faust.topics.Topic._get_producer" in message and patches.SUPPORTED in message


def test_the_patched_libraries_have_upper_bounds_that_match_the_check():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for package in ("faust-streaming", "aiokafka"):
        spec = next(d for d in deps if re.match(rf"{package}\b", d))
        assert "<" in spec, f"{package} has no upper bound"
        assert spec.replace(" ", "") in patches.SUPPORTED.replace(" ", ""), (spec, patches.SUPPORTED)


def test_every_patch_has_a_purpose_and_the_off_switch_knows_them_all():
    names = {patch.name for patch in patches.all_patches()}
    assert {patch.purpose for patch in patches.all_patches()} == {"embedded broker", "faust fix", "speed"}
    assert patches.patches_off("delivery-wait, get-producer") == {"delivery-wait", "get-producer"}
    assert patches.patches_off("speed") == {p.name for p in patches.all_patches() if p.purpose == "speed"}
    assert patches.patches_off("") == frozenset() and "seek-safe-consuming" in names
    with pytest.raises(ValueError, match="no-such-patch"):
        patches.patches_off("no-such-patch")
    with pytest.raises(ValueError, match="self-checks"):  # installed where the broker needs them, not switched
        patches.patches_off("single-record-batches")
