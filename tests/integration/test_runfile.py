"""The run file lets commands find the broker of a running ``talkstream run``; a stale one (its
process gone, not a ``talkstream run``, or its broker silent) is ignored."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.common.httpserver import free_port
from streams import runfile
from streams.settings import Settings
from tests.support import wait_until


def _settings(tmp_path, **kw) -> Settings:
    return Settings(_env_file=None, data_dir=str(tmp_path), **kw)


def test_written_and_removed_by_its_own_process(tmp_path):
    settings = _settings(tmp_path)
    path = runfile.write(settings, "kafka://127.0.0.1:1", "on", "http://127.0.0.1:6066")
    saved = json.loads(path.read_text())
    assert saved["broker"] == "kafka://127.0.0.1:1" and saved["single_record_batches"] == "on"
    assert not any("token" in k or "secret" in k for k in saved)
    runfile.remove(settings)
    assert not path.exists()


def test_a_file_of_a_dead_process_is_stale(tmp_path):
    settings = _settings(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runfile.path(settings).write_text(json.dumps({"pid": dead.pid, "broker": "kafka://127.0.0.1:1"}))
    assert runfile.running(settings) is None
    with pytest.raises(runfile.NoRunningBroker, match="make run"):
        runfile.with_running_broker(settings)


def test_a_live_process_that_is_not_talkstream_run_is_stale(tmp_path, broker):
    settings = _settings(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runfile.path(settings).write_text(json.dumps({"pid": other.pid, "broker": broker.url}))
        assert runfile.running(settings) is None
    finally:
        other.kill()
        other.wait()


def test_a_silent_broker_is_stale_and_a_live_one_is_found(tmp_path, broker):
    settings = _settings(tmp_path)
    # this test's own process stands in for `talkstream run` only if its command line says so
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "talkstream", "run"])
    try:  # (until it has exec'd, its command line is this process's)
        wait_until(lambda: b"talkstream" in Path(f"/proc/{runner.pid}/cmdline").read_bytes(), timeout=30,
                   message="the stand-in started")
        runfile.path(settings).write_text(json.dumps({"pid": runner.pid, "broker": f"kafka://127.0.0.1:{free_port()}"}))
        assert runfile.running(settings) is None
        runfile.path(settings).write_text(json.dumps({"pid": runner.pid, "broker": broker.url,
                                                      "single_record_batches": "on", "app_id": "x"}))
        found = runfile.with_running_broker(settings)
        assert found.kafka_broker == broker.url and found.single_record_batches == "on"
    finally:
        runner.kill()
        runner.wait()


def test_kafka_broker_wins_over_the_file(tmp_path):
    settings = _settings(tmp_path, kafka_broker="kafka://elsewhere:9092")
    assert runfile.with_running_broker(settings) is settings
