"""The dashboard in a real browser (Debian's chromium driven by Playwright) against a real `orchestrator run`.

Waits are Playwright's own (it re-checks a condition until it holds or its timeout passes), so
nothing here depends on the page's polling period beyond "eventually, without a reload".
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
import redis
from playwright.sync_api import expect

from orchestrator.jobs.model import Keys
from tests.monitor.conftest import TOKEN, NewPage, Server

pytestmark = pytest.mark.timeout(120)

XSS = '<img src=x onerror="window.__pwned = 1"><script>window.__pwned = 2</script>'


def test_page_loads_without_console_errors(new_page: NewPage, server: Server) -> None:
    job_id = server.trigger(name="warm-up")
    server.wait_state(job_id, "succeeded")
    probe = new_page(token=TOKEN)
    page = probe.page
    expect(page.locator("#queues tbody tr")).to_have_count(2)
    expect(page.locator("#queues tbody")).to_contain_text("warehouse")
    expect(page.locator("#states .chip.state-succeeded .chip-n")).not_to_have_text("0")
    expect(page.locator("#chart svg rect.bar-ok").first).to_be_attached()
    expect(page.locator("#instances tbody tr")).to_have_count(1)
    leader = server.leader()
    expect(page.locator("#leader")).to_contain_text(f"Leader: {leader['instance_id']} (token {leader['token']})")
    expect(page.locator("#instances tbody tr .badge")).to_have_text("leader")
    expect(page.locator(f"#finished tr[data-job='{job_id}']")).to_be_visible()
    expect(page.locator("#auth-state")).to_contain_text("Token set")
    probe.shot("overview")
    assert probe.console_errors == []
    assert probe.page_errors == []


def test_a_job_triggered_after_load_shows_without_reload(new_page: NewPage, server: Server) -> None:
    probe = new_page("#jobs", token=TOKEN)
    page = probe.page
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    job_id = server.trigger(name="late")
    expect(page.locator(f"#jobs tr[data-job='{job_id}']")).to_be_visible(timeout=15_000)
    expect(page.locator(f"#jobs tr[data-job='{job_id}'] .state")).to_have_text("succeeded", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    assert probe.page_errors == []


def test_the_job_list_filters_by_state(new_page: NewPage, server: Server) -> None:
    ok = server.trigger(name="fine")
    bad = server.trigger(name="broken", fail_until_file=str(server.tmp / "never"))
    server.wait_state(ok, "succeeded")
    server.wait_state(bad, "failed")
    probe = new_page("#jobs", token=TOKEN)
    page = probe.page
    expect(page.locator(f"#jobs tr[data-job='{ok}']")).to_be_visible()
    page.select_option("#filter-state", "failed")
    expect(page.locator(f"#jobs tr[data-job='{bad}']")).to_be_visible()
    expect(page.locator(f"#jobs tr[data-job='{ok}']")).to_have_count(0)
    expect(page.locator("#jobs tbody .state")).not_to_have_text(["succeeded"])
    for badge in page.locator("#jobs tbody .state").all_text_contents():
        assert badge == "failed"
    probe.shot("jobs-failed-filter")
    page.select_option("#filter-state", "succeeded")
    expect(page.locator(f"#jobs tr[data-job='{ok}']")).to_be_visible()
    expect(page.locator(f"#jobs tr[data-job='{bad}']")).to_have_count(0)


def test_a_job_opens_with_its_log_tailing(new_page: NewPage, server: Server) -> None:
    gate = server.tmp / "tail-gate"
    job_id = server.trigger(name="tail-me", sleep=60, fail_until_file=str(gate))
    server.wait_state(job_id, "running")
    probe = new_page("#jobs", token=TOKEN)
    page = probe.page
    page.locator(f"#jobs tr[data-job='{job_id}'] a").click()
    expect(page.locator("#job-id")).to_have_text(job_id)
    expect(page.locator("#job-state")).to_have_text("running")
    # The plugin printed its line before sleeping: it arrives while the job still runs.
    expect(page.locator("#job-log")).to_contain_text("working on tail-me", timeout=15_000)
    expect(page.locator("#log-status")).to_contain_text("tailing")
    expect(page.locator("#job-params")).to_contain_text('"name": "tail-me"')
    expect(page.locator("#job-fields")).to_contain_text("elapsed")
    probe.shot("job-running")
    page.click("#job-actions button.act-cancel")
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=20_000)
    assert server.job(job_id)["state"] == "cancelled"
    expect(page.locator("#log-status")).to_contain_text("complete", timeout=15_000)


def test_a_long_log_loads_whole(new_page: NewPage, server: Server) -> None:
    job_id = server.trigger("chatty", lines=1200)
    server.wait_state(job_id, "succeeded")
    probe = new_page(f"#job/{job_id}", token=TOKEN)
    page = probe.page
    expect(page.locator("#log-status")).to_have_text("(1200 lines, complete)", timeout=20_000)
    # each stream keeps its order; the two pipes may interleave either way at the end
    expect(page.locator("#job-log .line.stdout").last).to_have_text("line 1198")
    expect(page.locator("#job-log .line.stderr").last).to_have_text("line 1199")
    expect(page.locator("#job-log .line.stderr")).to_have_count(120)


def test_retry_with_the_token_runs_the_job_again(new_page: NewPage, server: Server) -> None:
    gate = server.tmp / "retry-gate"
    failed = server.trigger(name="flaky", fail_until_file=str(gate))
    server.wait_state(failed, "failed")
    probe = new_page("#failed")
    page = probe.page
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#auth-state")).to_contain_text("Token set")
    row = page.locator(f"#failed tr[data-job='{failed}']")
    expect(row).to_be_visible()
    expect(row.locator("td.error")).to_contain_text("retry-gate does not exist yet")
    probe.shot("failed-store")
    gate.write_text("open")  # the next run succeeds
    row.locator("button.act-retry").click()
    expect(page.locator("#notice-text")).to_contain_text(f"job {failed} retried as")
    page.click("#notice-link")
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=20_000)
    expect(page.locator("#job-fields")).to_contain_text(failed)  # "retry of"
    new_id = page.locator("#job-id").text_content()
    assert new_id and new_id != failed
    assert server.job(new_id)["state"] == "succeeded"
    assert server.job(new_id)["retry_of"] == failed
    expect(page.locator("#job-result")).to_contain_text('"name": "flaky"')
    probe.shot("job-detail")
    assert probe.page_errors == []


def test_the_job_page_shows_the_trace_id(new_page: NewPage, server: Server) -> None:
    job_id = server.trigger(name="traced")
    server.wait_state(job_id, "succeeded")
    # This module's server runs untraced: the record gets the field a traced trigger writes with it
    # (tests/tracing covers writing it); this test is about the page showing it.
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with redis.Redis.from_url(server.redis_url) as r:
        r.hset(Keys.job(job_id), "trace", json.dumps({"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}))
    assert server.job(job_id)["trace_id"] == trace_id
    page = new_page(f"#job/{job_id}", token=TOKEN).page  # job data: behind the token
    expect(page.locator("#job-fields")).to_contain_text(f"trace{trace_id}")


def test_without_the_token_counts_show_and_job_data_waits_for_it(new_page: NewPage, server: Server) -> None:
    failed = server.trigger(name="stays-failed", fail_until_file=str(server.tmp / "never"))
    server.wait_state(failed, "failed")
    before = server.request("GET", "/api/jobs?plugin=probe&limit=1000")[1]

    probe = new_page()
    page = probe.page
    expect(page.locator("#auth-state")).to_contain_text("Read-only")
    expect(page.locator("#locked")).to_contain_text("Job data is hidden: missing or wrong bearer token")
    expect(page.locator("#queues tbody tr")).to_have_count(2)  # counts are open
    expect(page.locator("#states .chip.state-failed .chip-n")).not_to_have_text("0")
    page.goto(server.url + "/#failed")
    expect(page.locator(f"#failed tr[data-job='{failed}']")).to_have_count(0)
    page.goto(server.url + f"/#job/{failed}")
    expect(page.locator("#job-state")).not_to_have_text("failed")

    # A wrong token reaches the server, which refuses it; the page says so and shows nothing.
    wrong = new_page("#failed", token="not-the-token")
    expect(wrong.page.locator("#locked")).to_contain_text("missing or wrong bearer token")
    expect(wrong.page.locator(f"#failed tr[data-job='{failed}']")).to_have_count(0)
    wrong.shot("token-refused")

    # The right one, pasted: the job, its actions and its log show without a reload.
    page.fill("#token-input", TOKEN)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#locked")).to_be_hidden()
    expect(page.locator("#job-state")).to_have_text("failed")
    expect(page.locator("#job-actions button.act-retry")).to_be_enabled()
    expect(page.locator("#job-log")).to_contain_text("working on stays-failed")

    assert server.job(failed)["state"] == "failed"
    after = server.request("GET", "/api/jobs?plugin=probe&limit=1000")[1]
    assert [j["job_id"] for j in after] == [j["job_id"] for j in before], "a refused read enqueued a job"
    assert probe.page_errors == []


def test_html_in_params_and_logs_shows_as_text(new_page: NewPage, server: Server) -> None:
    job_id = server.trigger(name=XSS)
    server.wait_state(job_id, "succeeded")
    probe = new_page(f"#job/{job_id}", token=TOKEN)
    page = probe.page
    expect(page.locator("#job-params")).to_contain_text(XSS.replace('"', '\\"'))
    expect(page.locator("#job-result")).to_contain_text("<img src=x")
    expect(page.locator("#job-log")).to_contain_text(f"working on {XSS}")
    page.goto(server.url + "/#jobs")
    expect(page.locator(f"#jobs tr[data-job='{job_id}']")).to_be_visible()
    page.goto(server.url + "/#overview")
    expect(page.locator(f"#finished tr[data-job='{job_id}']")).to_be_visible()
    assert page.locator("img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert probe.page_errors == []


def test_plugins_schedules_and_change_capture(new_page: NewPage, server: Server) -> None:
    probe = new_page("#plugins", token=TOKEN)
    page = probe.page
    rows = page.locator("#plugins tbody tr")
    expect(rows.filter(has_text="probe").locator(".state")).to_have_text("ready")
    expect(rows.filter(has_text="broken").locator(".state")).to_have_text("invalid")
    expect(rows.filter(has_text="broken").locator("td.reason")).not_to_be_empty()
    expect(rows.filter(has_text="other")).to_contain_text("warehouse")
    probe.shot("plugins")
    page.click("#tabs a[data-view=schedules]")
    # Absent from /status (no scheduler in this build) or an empty list once it runs.
    expect(page.locator("#schedules-none")).to_have_text(re.compile(r"not configured|No schedules configured"))
    expect(page.locator("#schedules")).to_be_hidden()
    page.click("#tabs a[data-view=cdc]")
    expect(page.locator("#cdc-none")).to_contain_text("Change capture: not configured")
    expect(page.locator("#cdc")).to_be_hidden()


def test_the_job_list_filters_by_plugin_and_queue_and_pages(new_page: NewPage, server: Server) -> None:
    ids = [server.trigger("other", name=f"w{i}") for i in range(27)]
    for job_id in ids:
        server.wait_state(job_id, "succeeded")
    probe = new_page("#jobs", token=TOKEN)
    page = probe.page
    page.select_option("#filter-queue", "warehouse")
    expect(page.locator(f"#jobs tr[data-job='{ids[-1]}']")).to_be_visible()
    expect(page.locator("#jobs tbody tr")).to_have_count(25)
    expect(page.locator("#page-info")).to_have_text("1–25")
    page.click("#page-next")
    expect(page.locator("#page-info")).to_have_text("26–27")
    expect(page.locator(f"#jobs tr[data-job='{ids[0]}']")).to_be_visible()
    expect(page.locator("#page-next")).to_be_disabled()
    page.click("#page-prev")
    expect(page.locator("#page-info")).to_have_text("1–25")
    page.select_option("#filter-queue", "")
    page.select_option("#filter-plugin", "probe")
    plugins = page.locator("#jobs tbody td:nth-child(2)")
    expect(plugins.filter(has_text="other")).to_have_count(0)
    expect(plugins.first).to_have_text("probe")
    assert set(plugins.all_text_contents()) == {"probe"}


def test_usable_on_a_phone_sized_screen(new_page: NewPage, server: Server) -> None:
    probe = new_page(width=390, height=844, token=TOKEN)
    page = probe.page
    expect(page.locator("#queues tbody tr").first).to_be_visible()
    # Nothing forces the page wider than the screen: wide tables scroll inside their own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    probe.shot("phone-overview")
    page.click("#tabs a[data-view=jobs]")
    expect(page.locator("#jobs tbody tr").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    probe.shot("phone-jobs")


def test_schedules_and_change_capture_rules_render_from_status(new_page: NewPage, server: Server) -> None:
    """The scheduler and change capture add `schedules` and `cdc` to /status; until they run in this
    build, the real /status answer is extended on its way to the page with the documented shapes."""
    schedules = [
        {"id": "nightly", "plugin": "probe", "cron": "0 2 * * *", "timezone": "UTC", "enabled": True,
         "next_run_at": "2999-01-01T02:00:00Z", "last_run_at": None, "last_state": None},
        {"id": XSS, "plugin": "probe", "every": "30s", "enabled": False,
         "next_run_at": None, "last_run_at": "2020-01-01T00:00:00Z", "last_state": "failed"},
    ]  # fmt: skip
    cdc = {
        "enabled": True,
        "rules": [
            {"name": "orders", "table": "shop.orders", "mode": "changelog", "enabled": True,
             "position": {"id": 42}, "lag_s": 1.5, "delivered": 7, "last_error": None},
            {"name": "users", "table": "shop.users", "mode": "poll", "enabled": True,
             "position": "2026-11-30T00:00:00Z", "lag_s": None, "delivered": 0, "last_error": XSS},
        ],
    }  # fmt: skip

    def extend(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "schedules": schedules, "cdc": cdc})

    probe = new_page(token=TOKEN)
    page = probe.page
    page.route("**/status", extend)
    page.click("#tabs a[data-view=schedules]")
    rows = page.locator("#schedules tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("cron 0 2 * * * (UTC)")
    expect(rows.nth(0)).to_contain_text("in ")  # the next run, relative
    expect(rows.nth(1)).to_contain_text("every 30s")
    expect(rows.nth(1).locator("td").first).to_have_text(XSS)
    expect(rows.nth(1).locator(".state")).to_have_text("failed")
    expect(page.locator("#schedules-none")).to_be_hidden()
    page.click("#tabs a[data-view=cdc]")
    rules = page.locator("#cdc tbody tr")
    expect(rules).to_have_count(2)
    expect(rules.nth(0)).to_contain_text("shop.orders")
    expect(rules.nth(0)).to_contain_text('{"id":42}')
    expect(rules.nth(0)).to_contain_text("1.50s")
    expect(rules.nth(1).locator("td.error")).to_have_text(XSS)
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None
    probe.shot("cdc")


def test_a_workflow_shows_its_steps_as_a_tree_linked_to_their_jobs(new_page: NewPage, server: Server) -> None:
    spec = {"name": XSS, "chain": [{"plugin": "probe", "params": {"name": "a"}},
                                   {"group": [{"plugin": "probe"}, {"plugin": "other"}]}]}  # fmt: skip
    status, body = server.request("POST", "/api/workflows", spec)
    assert status == 201, body
    wid = body["workflow_id"]
    shown: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while shown.get("state") != "succeeded" and time.monotonic() < deadline:
        shown = server.request("GET", f"/api/workflows/{wid}")[1]
        time.sleep(0.05)
    assert shown["state"] == "succeeded", shown
    page = new_page("#workflows", token=TOKEN).page  # workflows are job data: behind the token
    expect(page.locator("#workflows tbody tr").first).to_contain_text(XSS)  # a name is text, never markup
    page.click(f"#workflows a[href='#workflow/{wid}']")
    expect(page.locator("#workflow-state")).to_have_text("succeeded")
    steps = page.locator("#workflow-steps li[data-step]")
    expect(steps).to_have_count(3)
    expect(page.locator("#workflow-steps .kind").first).to_have_text("chain")
    expect(page.locator("#workflow-steps .kind").nth(1)).to_have_text("group")
    first_job = shown["steps"]["steps"][0]["job_id"]
    page.click(f"#workflow-steps a[href='#job/{first_job}']")
    expect(page.locator("#job-id")).to_have_text(first_job)
    expect(page.locator("#job-fields")).to_contain_text("workflow")
    page.click(f"#job-fields a[href='#workflow/{wid}']")
    expect(page.locator("#workflow-id")).to_have_text(wid)
