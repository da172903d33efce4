"""The run file: how commands in another terminal find the broker of a running ``talkstream run``.

``talkstream run`` writes ``<TALKSTREAM_DATA_DIR>/run.json`` once its broker is up and
removes it when it stops. It holds no secret: the supervisor's PID, the broker's
``kafka://`` URL, whether producers need single-record batches there, the app id and the
worker's web address. A command with ``KAFKA_BROKER`` unset reads it (``with_running_broker``);
a file whose process is gone, is not a ``talkstream run``, or whose broker does not answer is
stale (a killed run) and is ignored.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from connectors.common.kafka import bootstrap_servers
from streams.embedded_broker import kafka_api_versions_ok
from streams.settings import Settings

NAME = "run.json"


class NoRunningBroker(RuntimeError):
    """``KAFKA_BROKER`` is unset and no ``talkstream run`` is running in this folder."""


def path(settings: Settings) -> Path:
    return Path(settings.data_dir) / NAME


def write(settings: Settings, broker_url: str, single_record_batches: str, web_url: str | None) -> Path:
    """Record this process's broker (atomically: a reader never sees half a file)."""
    target = path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    partial.write_text(json.dumps({"pid": os.getpid(), "broker": broker_url,
                                   "single_record_batches": single_record_batches, "app_id": settings.app_id,
                                   "web": web_url, "started_at": time.time()}) + "\n")
    partial.replace(target)
    return target


def remove(settings: Settings) -> None:
    """Remove the run file if it is this process's."""
    target = path(settings)
    try:
        if json.loads(target.read_text()).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError):
        pass


def _is_talkstream_run(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process with that PID: cannot tell, the broker probe decides
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: the broker probe decides
    return b"run" in cmdline and any(b"talkstream" in part or b"streams.cli" in part for part in cmdline)


def running(settings: Settings) -> dict | None:
    """The run file's contents when its ``talkstream run`` is alive and its broker answers, else None."""
    try:
        found = json.loads(path(settings).read_text())
        pid, broker = int(found["pid"]), str(found["broker"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_talkstream_run(pid):
        return None
    host, _, port = bootstrap_servers(broker).split(",")[0].rpartition(":")
    if not kafka_api_versions_ok(host, int(port), timeout=1.0):
        return None
    return found


def with_running_broker(settings: Settings) -> Settings:
    """``settings`` as given when ``KAFKA_BROKER`` is set; otherwise with the broker of the
    ``talkstream run`` running in this folder; otherwise ``NoRunningBroker``."""
    if settings.kafka_broker:
        return settings
    found = running(settings)
    if found is None:
        raise NoRunningBroker(
            f"no broker: KAFKA_BROKER is unset and no `talkstream run` is running with data directory "
            f"{settings.data_dir} (start one with `make run` in this folder, or set KAFKA_BROKER)")
    update = {"kafka_broker": found["broker"], "single_record_batches": found.get("single_record_batches", "auto")}
    if "TALKSTREAM_APP_ID" not in os.environ and found.get("app_id"):
        update["app_id"] = found["app_id"]
    return settings.model_copy(update=update)
