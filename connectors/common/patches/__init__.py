"""Every change talkstream makes to Faust's and aiokafka's internals, by purpose.

- ``embedded_broker``: workarounds for the embedded broker's (Tansu's) defects,
  installed only in a worker whose start-up self-check found the defect
  (``streams.broker_check``); none of them runs on Apache Kafka.
- ``faust_fixes``: fixes of Faust bugs that lose records, and the one hook
  talkstream needs that Faust does not offer; installed everywhere.
- ``speed``: speed changes, each kept only while the Apache Kafka benchmark
  shows it earns 10 % or more (``python -m bench.patches``; the figures are in
  each patch's docstring).

``apply()`` checks that every attribute a patch replaces or reads exists (a
Faust or aiokafka release that moved one fails the start with the package, its
version and the attribute), then installs the fixes and the speed changes.
``TALKSTREAM_PATCHES_OFF`` (comma-separated patch names, or ``speed``) leaves
some out: for the benchmark that compares with and without them, not for
production.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

#: The versions the patches were written and tested for (``pyproject.toml`` says the same).
SUPPORTED = "faust-streaming>=0.15.2,<0.16 and aiokafka>=0.14,<0.15"

#: A patch target: (module, class or None, attribute).
Target = tuple[str, "str | None", str]


@dataclass(frozen=True)
class Patch:
    """One named change: what it replaces (``targets``) and how it is installed."""

    name: str
    purpose: str  # "embedded broker", "faust fix" or "speed"
    targets: tuple[Target, ...]
    install: Callable[[], None]


class UnsupportedLibraryVersion(RuntimeError):
    """An attribute talkstream patches is missing: Faust or aiokafka is a version it was not made for."""


def all_patches() -> tuple[Patch, ...]:
    from connectors.common.patches import embedded_broker, faust_fixes, speed

    return (*embedded_broker.PATCHES, *faust_fixes.PATCHES, *speed.PATCHES)


def patch_targets() -> tuple[Target, ...]:
    """Every attribute of Faust and aiokafka that some patch replaces or reads."""
    return tuple(dict.fromkeys(target for patch in all_patches() for target in patch.targets))


def check_patch_targets(targets: tuple[Target, ...] | None = None) -> None:
    """Fail with the package, its version and the missing attribute when a patch target is gone."""
    for module_name, class_name, attribute in targets if targets is not None else patch_targets():
        package = "faust-streaming" if module_name.startswith("faust") else module_name.split(".")[0]
        try:
            owner = importlib.import_module(module_name)
            if class_name is not None:
                owner = getattr(owner, class_name)
            found = hasattr(owner, attribute)
        except (ImportError, AttributeError):
            found = False
        if not found:
            try:
                version = metadata.version(package)
            except metadata.PackageNotFoundError:
                version = "not installed"
            where = f"{module_name}.{class_name + '.' if class_name else ''}{attribute}"
            raise UnsupportedLibraryVersion(
                f"{package} {version} has no {where}, which talkstream patches: install {SUPPORTED}")


def patches_off(value: str | None = None) -> frozenset[str]:
    """The patch names ``TALKSTREAM_PATCHES_OFF`` leaves out (``speed``: every speed change)."""
    from connectors.common.patches import speed

    names = {part.strip() for part in (value if value is not None
                                       else os.environ.get("TALKSTREAM_PATCHES_OFF", "")).split(",") if part.strip()}
    if "speed" in names:
        names = (names - {"speed"}) | {patch.name for patch in speed.PATCHES}
    from connectors.common.patches import faust_fixes

    known = {patch.name for patch in (*faust_fixes.PATCHES, *speed.PATCHES)} | {"speed"}
    unknown = names - known
    if unknown:
        raise ValueError(f"TALKSTREAM_PATCHES_OFF names no patch it can leave out {sorted(unknown)} (the embedded "
                         f"broker's workarounds follow its self-checks); known: {sorted(known)}")
    return frozenset(names)


_installed: set[str] = set()


def install(patch: Patch) -> None:
    """Install ``patch`` once per process."""
    if patch.name not in _installed:
        patch.install()
        _installed.add(patch.name)


def installed() -> frozenset[str]:
    return frozenset(_installed)


def apply() -> None:
    """Check every target, then install the Faust fixes and the speed changes (not the embedded
    broker's workarounds: ``embedded_broker.apply`` installs those where the broker needs them)."""
    from connectors.common.patches import faust_fixes, speed

    check_patch_targets()
    off = patches_off()
    for patch in (*faust_fixes.PATCHES, *speed.PATCHES):
        if patch.name not in off:
            install(patch)
