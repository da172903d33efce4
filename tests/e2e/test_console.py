"""The operator console in a real browser: Debian's Chromium, driven by Playwright for Python.

One pipeline (embedded broker, both sandboxes, a worker with ``TALKSTREAM_CONSOLE_TOKEN``)
serves every test of this module, in order: the flows page shows ``talkstream status --json``'s
numbers; searching an order shows its Business NXT order number and agreed values; a dead
letter provoked on purpose is re-driven by a click after its cause is fixed; pause holds an
edit back and resume lets it through; a wrong token shows no data and the API answers 401.
Each page's screenshot is saved under ``test-artifacts/console/`` (``TALKSTREAM_ARTIFACTS``
moves it).
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.harness import Pipeline, bnxt_all, crm_all, stamped, wait_for, wait_in_sync
from tests.support import CHROMIUM, CHROMIUM_ARGS, require_browser

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TOKEN = "console-e2e-4c1d9b2f"
ARTIFACTS = Path(os.environ.get("TALKSTREAM_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    require_browser()
    p = Pipeline(tmp_path_factory.mktemp("console"), seed=6,
                 env_extra={"TALKSTREAM_CONSOLE_TOKEN": TOKEN, "TALKSTREAM_WRITE_RETRY_MAX": "2"})
    p.tmp.mkdir(parents=True, exist_ok=True)
    try:
        p.start()
        p.start_worker()
        wait_in_sync(p, timeout=120)
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="module")
def browser(pipeline):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of pause and re-drive all
    try:
        yield page
    finally:
        context.close()


def run(coro):
    """The harness's calls to the systems, in a thread of their own: Playwright's sync API keeps an
    event loop running in this one."""
    return off_loop(harness.run, coro)


def off_loop(fn, *args):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def crm_create(p: Pipeline, resource: str, data: dict) -> dict:
    return off_loop(harness.crm_create, p, resource, data)


def crm_update(p: Pipeline, resource: str, record_id: str, patch: dict) -> dict:
    return off_loop(harness.crm_update, p, resource, record_id, patch)


def url(p: Pipeline, path: str = "/console/", token: str | None = TOKEN) -> str:
    return f"http://127.0.0.1:{p.web_port}{path}" + (f"#token={token}" if token else "")


def screenshot(page, name: str) -> None:
    folder = ARTIFACTS / "console"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def status(p: Pipeline) -> dict:
    return json.loads(p.cli("status", "--json").stdout)


def cell(page, flow: str, field: str) -> str:
    return page.locator(f'tr[data-flow="{flow}"] [data-field="{field}"]').first.inner_text().strip()


COLUMNS = ("links", "linked", "pending", "parked", "blocked", "deleted", "deadletters")


def test_flows_page_shows_the_numbers_of_status(pipeline, page):
    expected = status(pipeline)["flows"]
    assert set(expected) == {"order-order", "product-product", "user-order"}
    page.goto(url(pipeline))
    for flow, numbers in expected.items():
        wait_for(lambda: all(cell(page, flow, name) == str(numbers[name]) for name in COLUMNS), timeout=30,
                 message=f"{flow}'s row shows {numbers}")
        assert page.locator(f'tr[data-flow="{flow}"] .state').inner_text() == "running"
    assert expected["order-order"]["links"] > 0
    # the token left the address (it is kept in the browser) and the charts were drawn
    assert "token" not in page.url
    assert page.locator('figure.chart[data-flow="order-order"] svg.events polyline').count() == 1
    screenshot(page, "flows")


def test_search_shows_the_linked_order_and_its_agreed_values(pipeline, page):
    crm_id, rows = sorted(stamped(run(bnxt_all(pipeline, "order")), "customcrm:order:").items())[0]
    order_no = rows[0]["orderNo"]
    name = next(o for o in run(crm_all(pipeline, "orders")) if o["Id"] == crm_id)["Name"]
    page.goto(url(pipeline))
    page.fill("#search-id", crm_id)
    page.click("#search button")
    section = page.locator(f'section.link[data-key="order-order:{crm_id}"]')
    section.wait_for(timeout=30_000)
    assert section.locator(".id-businessnxt").inner_text() == str(order_no)
    assert section.locator(".id-customcrm").inner_text() == crm_id
    row = section.locator('tr[data-property="Name"]')
    assert row.locator("td.agreed").inner_text() == name
    # both records side by side, as their systems hold them now
    assert row.locator("td.customcrm").inner_text() == name
    assert row.locator("td.businessnxt").inner_text() == rows[0]["name"] == name
    assert section.locator("ol.decisions li").count() > 0 or "No decision" in section.inner_text()
    screenshot(page, "link")
    # the same link, found by its Business NXT order number
    page.fill("#search-id", str(order_no))
    page.click("#search button")
    page.locator(f'section.link[data-key="order-order:{crm_id}"]').wait_for(timeout=30_000)
    assert page.locator("section.link").count() == 1


def test_a_dead_letter_is_redriven_by_a_click_after_its_cause_is_fixed(pipeline, page):
    # the cause: Business NXT refuses every request, so the write's retries run out
    httpx.post(pipeline.bnxt_base + "/_sandbox/faults", json={"error_rate": 1.0, "status": 400}).raise_for_status()
    try:
        order = crm_create(pipeline, "orders", {"Name": "Written during the outage", "CustomerNo": 10004,
                                                "OrderDate": "2026-11-25"})
        key = f"order-order:{order['Id']}"
        page.goto(url(pipeline, "/console/deadletters"))
        row = page.locator("#deadletters tbody tr", has_text=key)
        row.wait_for(timeout=90_000)
        assert "order-order" in row.inner_text()
        row_id = row.get_attribute("data-id")
        row.locator("button.view").click()
        page.locator("#deadletter-body").wait_for()
        assert key in page.locator("#deadletter-body").inner_text()
        screenshot(page, "deadletters")
    finally:
        httpx.delete(pipeline.bnxt_base + "/_sandbox/faults").raise_for_status()  # the fix
    row.locator("button.redrive").click()
    row.wait_for(state="detached", timeout=30_000)
    wait_for(lambda: order["Id"] in stamped(run(bnxt_all(pipeline, "order")), "customcrm:order:"), timeout=60,
             message="the re-driven order reached Business NXT")
    assert all(entry["link_key"] != key for entry in json.loads(pipeline.cli("deadletters", "--json").stdout))
    # the action is in the worker's log, with what was done
    assert f"console: re-drove 1 dead letter(s) (asked from 127.0.0.1): {row_id}" in pipeline.worker.output()


def bnxt_name(p: Pipeline, crm_id: str) -> str:
    return stamped(run(bnxt_all(p, "order")), "customcrm:order:")[crm_id][0]["name"]


def worker_sees(p: Pipeline, state: str) -> bool:
    return httpx.get(f"http://127.0.0.1:{p.web_port}/status", timeout=5).json()["controls"]["order-order"][
        "state"] == state


def test_pause_holds_an_edit_and_resume_lets_it_through(pipeline, page):
    crm_id = sorted(stamped(run(bnxt_all(pipeline, "order")), "customcrm:order:"))[1]
    before = bnxt_name(pipeline, crm_id)
    page.goto(url(pipeline))
    button = page.locator('tr[data-flow="order-order"] button.control')
    wait_for(lambda: button.inner_text() == "Pause", timeout=30, message="the pause button")
    button.click()
    wait_for(lambda: page.locator('tr[data-flow="order-order"] .state').inner_text() == "paused", timeout=30,
             message="the page shows the flow paused")
    wait_for(lambda: worker_sees(pipeline, "paused"), timeout=30, message="the worker holds the flow")
    assert "console" in cell(page, "order-order", "why")
    assert "console: pause flow order-order (asked from 127.0.0.1)" in pipeline.worker.output()
    screenshot(page, "paused")

    crm_update(pipeline, "orders", crm_id, {"Name": "Edited while paused"})
    # the link decided the edit and held its write back
    wait_for(lambda: any("held" in line for link in json.loads(pipeline.cli(
        "explain", "--system", "customcrm", "--entity", "order", "--id", crm_id, "--json").stdout)
        for line in link["waiting"]), timeout=60, message="the edit is held")
    assert bnxt_name(pipeline, crm_id) == before

    wait_for(lambda: button.inner_text() == "Resume", timeout=30, message="the resume button")
    button.click()
    wait_for(lambda: page.locator('tr[data-flow="order-order"] .state').inner_text() == "running", timeout=30,
             message="the page shows the flow running")
    wait_for(lambda: bnxt_name(pipeline, crm_id) == "Edited while paused", timeout=60,
             message="the held edit reached Business NXT after resume")


def test_a_wrong_token_shows_no_data_and_the_api_answers_401(pipeline, page):
    base = f"http://127.0.0.1:{pipeline.web_port}"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = httpx.get(base + "/console/api/flows", headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert "links" not in answer.text
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert httpx.post(base + "/console/api/flows/order-order/pause", timeout=10).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(base + "/console/api/flows", headers=auth, timeout=30).status_code == 200
    # with the token: a missing id is a bad request, an unknown dead letter is not found
    assert httpx.get(base + "/console/api/links", headers=auth, timeout=30).status_code == 400
    assert httpx.get(base + "/console/api/deadletters/nope", headers=auth, timeout=30).status_code == 404
    assert httpx.post(base + "/console/api/flows/no-such-flow/pause", headers=auth, timeout=30).status_code == 404

    page.goto(url(pipeline, token="wrong-token"))
    page.locator("#login").wait_for(state="visible", timeout=30_000)
    assert page.locator("#content").is_hidden()
    assert "refused" in page.locator("#login-refused").inner_text()
    assert "talkstream run" in page.locator("#login-why").inner_text()
    assert cell(page, "order-order", "links") == "…"  # no number reached the page
    screenshot(page, "wrong-token")
    # the right token, entered once in the form, opens it
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    wait_for(lambda: cell(page, "order-order", "links") not in ("…", ""), timeout=30, message="the data")


def test_no_secret_reaches_a_page_an_answer_or_the_log(pipeline):
    base = f"http://127.0.0.1:{pipeline.web_port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    crm_id = sorted(stamped(run(bnxt_all(pipeline, "order")), "customcrm:order:"))[0]
    bodies = [httpx.get(base + path, timeout=10).text
              for path in ("/console/", "/console/link", "/console/deadletters", "/console/static/console.js")]
    bodies += [httpx.get(base + path, headers=auth, timeout=60).text
               for path in ("/console/api/flows", f"/console/api/links?id={crm_id}", "/console/api/deadletters")]
    assert crm_id in bodies[-2]  # the record's links were answered
    for secret in (harness.CRM_TOKEN, harness.CLIENT_SECRET, pipeline.webhook_key, TOKEN):
        assert not any(secret in body for body in bodies), secret
    # the console's token is the worker's secret too: in its environment, never in its log
    assert TOKEN not in pipeline.worker.output()
