"""`talkstream explain`, from a process of its own that reads the links changelog and the
decision records: a linked order's ids, status and agreed values; and after an edit on each side
between two polls, each property names the side its value came from, and the decisions say why."""
from __future__ import annotations

import json

import httpx
import pytest

from tests.e2e.harness import bnxt_all, bnxt_update, crm_update, run, stamped, wait_for, wait_in_sync

pytestmark = pytest.mark.e2e


def explain(p, system: str, entity: str, record_id: str) -> list[dict]:
    return json.loads(p.cli("explain", "--system", system, "--entity", entity, "--id", record_id, "--json").stdout)


def properties(link: dict) -> dict[str, dict]:
    return {prop["property"]: prop for prop in link["properties"]}


def test_explain_shows_the_link_and_which_side_each_value_came_from(pipeline_factory):
    p = pipeline_factory(seed=10, env_extra={"TALKSTREAM_POLL_INTERVAL": "2.0"})
    p.start_worker()
    wait_in_sync(p, timeout=120)
    crm_id, rows = sorted(stamped(run(bnxt_all(p, "order")), "customcrm:order:").items())[0]
    order_no = rows[0]["orderNo"]

    # no TALKSTREAM_CONSOLE_TOKEN: the console is off, and says how to turn it on
    off = httpx.get(f"http://127.0.0.1:{p.web_port}/console/api/flows", timeout=10)
    assert off.status_code == 404 and "TALKSTREAM_CONSOLE_TOKEN" in off.json()["error"]

    [link] = explain(p, "customcrm", "order", crm_id)
    assert (link["flow"], link["key"], link["status"]) == ("order-order", f"order-order:{crm_id}", "linked")
    assert link["ids"] == {"customcrm": crm_id, "businessnxt": str(order_no)}
    assert link["waiting"] == [] and link["in_flight"] == []
    name = properties(link)["Name"]
    assert name["from"] == "customcrm" and name["reported"] == {"customcrm": True, "businessnxt": True}
    # the same link, found from the other side
    assert [other["key"] for other in explain(p, "businessnxt", "order", str(order_no))] == [link["key"]]

    # one edit on each side, between two polls (Customcrm is polled every 2 s)
    crm_update(p, "orders", crm_id, {"Name": "edited in Customcrm"})
    bnxt_update(p, "order", "orderNo", order_no, {"yourReference": "edited in Business NXT"})

    def both_agreed() -> bool:
        props = properties(explain(p, "customcrm", "order", crm_id)[0])
        return (props["Name"]["agreed"], props["YourReference"]["agreed"]) == \
            ("edited in Customcrm", "edited in Business NXT")
    wait_for(both_agreed, timeout=60, message="both edits agreed")
    [link] = explain(p, "customcrm", "order", crm_id)
    props = properties(link)
    assert props["Name"]["from"] == "customcrm" and props["YourReference"]["from"] == "businessnxt"
    # and why: the link's recent decisions (talkstream.decisions)
    whys = {(c["property"], c["new"]): c["why"] for record in link["decisions"] for c in record["changes"]}
    assert whys[("Name", "edited in Customcrm")] == "customcrm changed it"
    assert whys[("YourReference", "edited in Business NXT")] == "businessnxt changed it"
    assert link["decisions"][0]["trigger"]["kind"] in ("change", "result")
    wait_for(lambda: all(properties(explain(p, "customcrm", "order", crm_id)[0])[name]["reported"]
                         == {"customcrm": True, "businessnxt": True} for name in ("Name", "YourReference")),
             timeout=60, message="both sides reported the agreed values")

    text = p.cli("explain", "--system", "customcrm", "--entity", "order", "--id", crm_id).stdout
    assert "order-order" in text and "edited in Customcrm" in text
    with pytest.raises(AssertionError, match="no link holds customcrm record ord_nope"):  # and a non-zero exit
        p.cli("explain", "--system", "customcrm", "--entity", "order", "--id", "ord_nope")
