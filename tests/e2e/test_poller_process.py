"""The pollers' own process (``streams.poller_process``), end to end: the leading worker starts
it, it feeds the worker's metrics, and it dies with the worker, after a ``kill -9`` too."""
from __future__ import annotations

import os
import re

import pytest

from tests.e2e.harness import crm_create, stamped, bnxt_all, run, wait_for, wait_in_sync, worker_status

pytestmark = pytest.mark.e2e


def poller_pids(p) -> list[int]:
    """The pids of the pollers' processes the worker's log says it started."""
    return [int(pid) for pid in re.findall(r"pollers: started their process \(pid (\d+)\)", p.worker.output())]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().split(") ", 1)[1].split()[1])


def test_the_leading_worker_polls_in_a_child_process_that_dies_with_it(pipeline_factory):
    p = pipeline_factory(seed=10)
    p.start_worker()
    wait_in_sync(p, timeout=90)
    (child,) = poller_pids(p)
    assert alive(child) and parent_of(child) == p.worker.process.pid
    # the child's polls reach the worker's own status
    assert set(worker_status(p)["last_poll"]) == {"customcrm.order", "customcrm.product", "customcrm.user",
                                                   "businessnxt.order", "businessnxt.product"}

    p.worker.kill9()
    wait_for(lambda: not alive(child), timeout=15, message="the pollers' process exits with its worker")

    p.start_worker()
    order = crm_create(p, "orders", {"Name": "After the restart", "CustomerNo": 10001, "OrderDate": "2026-11-25"})
    wait_for(lambda: order["Id"] in stamped(run(bnxt_all(p, "order")), "customcrm:order:"), timeout=60,
             message="a new worker's pollers sync a new order")
    (again,) = poller_pids(p)
    assert again != child and alive(again)


def test_with_pollers_in_the_worker_no_child_process_is_started(pipeline_factory):
    p = pipeline_factory(seed=10, env_extra={"TALKSTREAM_POLLERS": "worker"})
    p.start_worker()
    wait_in_sync(p, timeout=90)
    assert poller_pids(p) == []
    children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _child_of(int(pid), p.worker.process.pid)]
    assert children == []


def _child_of(pid: int, parent: int) -> bool:
    try:
        return parent_of(pid) == parent
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return False
