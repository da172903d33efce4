"""`talkstream run` (what `make run` starts): broker, sandboxes and worker from
nothing with no error line, "all flows linked", `talkstream status` in a second
terminal finds the broker without KAFKA_BROKER and fits 80 columns, the printed
curl edit reaches Businessnxt, and Ctrl-C leaves no process behind. Also with RocksDB tables, and with
`--broker kafka` (a real Apache Kafka, RocksDB tables: the production engine)."""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from connectors.common.httpserver import free_port
from tests.support import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SEED = 200  # the README's `make run` default: the status table must fit 80 columns with it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("run_args, store", [
    pytest.param([], None, id="embedded"),
    pytest.param([], "rocksdb://", id="embedded-rocksdb"),
    pytest.param(["--broker", "kafka"], None, id="kafka-rocksdb", marks=pytest.mark.kafka),
])
def test_run_syncs_the_seeded_sandboxes_and_stops_cleanly(tmp_path, run_args, store):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TALKSTREAM_", "KAFKA_"))}
    web_port = free_port()
    env.update(TALKSTREAM_DATA_DIR=str(tmp_path / "data"), TALKSTREAM_WEB_PORT=str(web_port),
               TALKSTREAM_POLL_INTERVAL="0.5")
    if store:
        env["TALKSTREAM_STORE"] = store
    # a RocksDB table left by an earlier run (of a broker that is gone) is removed, not recovered
    stale = tmp_path / "data" / "talkstream-data" / "tables-of-an-earlier-run"
    stale.mkdir(parents=True)
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "run", "--seed", str(SEED), *run_args],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        text = lambda: log.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "all flows linked" in text() or proc.poll() is not None, timeout=120,
                   message="all flows linked")
        assert proc.poll() is None, text()[-3000:]
        output = text()
        before_linked = output[:output.index("all flows linked")]
        assert not re.search(r"error|refused|traceback", before_linked, re.IGNORECASE), before_linked
        assert output.count("Businessnxt sandbox:") == output.count("Customcrm sandbox:") == 1
        assert not stale.exists() and "removed the tables of an earlier run" in output
        # a second terminal in the same folder: no KAFKA_BROKER, the run file leads to the broker
        beside = {k: v for k, v in env.items() if k != "TALKSTREAM_WEB_PORT"}
        status = subprocess.run([sys.executable, "-m", "streams.cli", "status", "--json"], env=beside, cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        flows = json.loads(status.stdout)["flows"]
        assert flows["order-order"]["linked"] == flows["product-product"]["linked"] == SEED
        assert status.stderr == ""  # nothing on stderr: no broker check, no connection error
        table = subprocess.run([sys.executable, "-m", "streams.cli", "status"], env=beside, cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert table.returncode == 0 and table.stderr == "", table.stderr
        assert max(map(len, table.stdout.splitlines())) <= 80, table.stdout
        assert re.search(rf"order-order +{SEED} +{SEED} ", table.stdout), table.stdout
        assert re.search(r"customcrm\.order +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+ (s|min)", table.stdout), table.stdout
        # the console's address, with a token made up for this run: printed once, never logged
        console = re.search(r"console: (http://\S+)/console/#token=(\S+)", output)
        assert console and output.count(console.group(2)) == 1, output[-3000:]
        answer = httpx.get(f"{console.group(1)}/console/api/flows", timeout=60,
                           headers={"Authorization": f"Bearer {console.group(2)}"})
        assert answer.json()["flows"]["order-order"]["linked"] == SEED
        broker_pid = int(re.search(r"(?:embedded broker|Apache Kafka \S+) listening on \S+ \(pid (\d+)", output)
                         .group(1))
        # the worker's link state, walked (a RocksDB store is read through the table's public interface)
        memory = httpx.get(f"http://127.0.0.1:{web_port}/status", params={"memory": 1}, timeout=30).json()
        assert memory["state_memory"]["store"] == (store or ("rocksdb://" if run_args else "memory://"))
        assert memory["state_memory"]["table_entries"] > 0
        pids = [int(x) for x in re.findall(r"pid (\d+)", output)]
        curl = next(line.split("try an edit:", 1)[1].strip() for line in output.splitlines() if "try an edit:" in line)
        # run the printed example (as a person would), then see it in Businessnxt
        args = shlex.split(curl)
        url = args[-1]
        headers = {args[i + 1].split(":", 1)[0]: args[i + 1].split(":", 1)[1].strip()
                   for i, a in enumerate(args) if a == "-H"}
        body = args[args.index("-d") + 1]
        assert httpx.patch(url, headers=headers, content=body).status_code == 200
        bnxt_url = re.search(r"Businessnxt sandbox: (\S+)/api/graphql-service", output).group(1)
        order_id = url.rsplit("/", 1)[1]

        def arrived():
            token = httpx.post(bnxt_url + "/connect/token", data={
                "grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret",
                "scope": "business-graphql-service-api:access-group-based"}).json()["access_token"]
            q = ('{ useCompany(no: 1) { order(filter: {information1: {_eq: "customcrm:order:%s"}}) '
                 '{ items { name } } } }' % order_id)
            r = httpx.post(bnxt_url + "/api/graphql-service", json={"query": q},
                           headers={"Authorization": f"Bearer {token}"}).json()
            items = r["data"]["useCompany"]["order"]["items"]
            return items and items[0]["name"] == "Edited in Customcrm"
        wait_until(arrived, timeout=15, interval=0.25, message="the curl edit reached Businessnxt")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert not (tmp_path / "data" / "run.json").exists()  # removed on exit: commands say no broker runs
    assert ("Apache Kafka stopped" if run_args else "embedded broker stopped") in log.read_text()
    wait_until(lambda: not any(_alive(pid) for pid in [broker_pid, *pids]), timeout=15,
               message="every started process is gone")
