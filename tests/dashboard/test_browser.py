"""The dashboard in a real headless browser, against a data directory a live engine holds (service.py)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from actorflow import _control as control
from storage import LmdbJournal

from .conftest import TIMEOUT, Server, Service, http

PNG = b"\x89PNG\r\n\x1a\n"


def wait(driver: Any) -> WebDriverWait:  # type: ignore[type-arg]
    # the live refresh replaces elements under our feet: look them up again
    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,))


def run_ids(driver: Any) -> list[str]:
    return [tr.get_attribute("data-run-id") for tr in driver.find_elements(By.CSS_SELECTOR, "#runs tr.run")]


def query(driver: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(driver.current_url).query)


def test_the_list_filters_and_keeps_them_in_the_url(browser: Any, server: Server) -> None:
    browser.get(server.url + "/runs")
    all_ids = run_ids(browser)
    executions = [tr.get_attribute("data-run-id") for tr in browser.find_elements(By.CSS_SELECTOR, "#runs tr.run[data-workflow^='task:']")]
    assert len(executions) == 2  # service.py's delayed send_email and its dead letter
    assert set(all_ids) - set(executions) == {"order-1", "order-2", "order-1/3", "order-2/3", "hold-1", "nap-1", "doomed-1"} | {f"report-{i}" for i in range(1, 6)}
    assert all_ids == sorted(all_ids, reverse=True)  # newest (highest) run id first
    assert browser.find_element(By.ID, "count-all").text == "14"
    assert browser.find_element(By.ID, "count-waiting").text == "3"
    assert browser.find_element(By.ID, "count-completed").text == "7"

    Select(browser.find_element(By.ID, "f-state")).select_by_value("completed")  # submits on change
    wait(browser).until(lambda d: "state=completed" in d.current_url)
    assert sorted(run_ids(browser)) == ["order-1/3", "order-2/3"] + [f"report-{i}" for i in range(1, 6)]
    assert {tr.get_attribute("data-state") for tr in browser.find_elements(By.CSS_SELECTOR, "#runs tr.run")} == {"completed"}

    box = browser.find_element(By.ID, "f-q")
    box.send_keys("report-")
    browser.find_element(By.ID, "f-apply").click()
    wait(browser).until(lambda d: "q=report-" in d.current_url)
    assert query(browser) == {"state": ["completed"], "q": ["report-"]}  # only the filters in use
    assert run_ids(browser) == [f"report-{i}" for i in range(5, 0, -1)]

    browser.refresh()  # the filters live in the address: a reload (or a shared link) shows the same
    assert run_ids(browser) == [f"report-{i}" for i in range(5, 0, -1)]
    assert Select(browser.find_element(By.ID, "f-state")).first_selected_option.get_attribute("value") == "completed"

    browser.get(server.url + "/runs?workflow=order")
    assert run_ids(browser) == ["order-2", "order-1"]
    browser.get(server.url + "/runs?state=failed&q=doomed")
    assert run_ids(browser) == ["doomed-1"]
    assert "the report template is missing" in browser.find_element(By.CSS_SELECTOR, "#runs tr.run td.err").text
    browser.get(server.url + f"/runs?since={time.time() + 3600:.0f}")  # created in an hour: none yet
    assert run_ids(browser) == [] and browser.find_element(By.ID, "no-runs").is_displayed()
    browser.get(server.url + "/runs?since=2000-01-01&until=2999-01-01&state=sleeping&q=nap")
    assert run_ids(browser) == ["nap-1"]

    browser.get(server.url + "/runs?limit=5")  # server-side pages, by keyset
    first = run_ids(browser)
    browser.find_element(By.ID, "older").click()
    wait(browser).until(lambda d: "after=" in d.current_url)
    second = run_ids(browser)
    browser.find_element(By.ID, "older").click()
    wait(browser).until(lambda d: run_ids(d) != second)
    third = run_ids(browser)
    assert len(first) == len(second) == 5 and first + second + third == all_ids
    assert not browser.find_elements(By.ID, "older")
    browser.find_element(By.ID, "newer").click()
    wait(browser).until(lambda d: "before=" in d.current_url)
    assert run_ids(browser) == second

    status, body = http(server.url + "/runs?state=bogus")
    assert status == 400 and "bogus" in body


def test_the_detail_shows_retries_sleep_signal_wait_and_child(browser: Any, server: Server, tmp_path: Path) -> None:
    browser.get(server.url + "/runs/order-2")
    assert browser.find_element(By.ID, "run-state").text == "waiting"
    charge = browser.find_element(By.CSS_SELECTOR, '.wf-row[data-kind="step"][data-name="charge"]')
    assert charge.get_attribute("data-attempts") == "3"
    segs = [(s.get_attribute("data-kind"), s.get_attribute("data-status")) for s in charge.find_elements(By.CSS_SELECTOR, ".seg")]
    assert segs == [("attempt", "failed"), ("retry_wait", "ok"), ("attempt", "failed"), ("retry_wait", "ok"), ("attempt", "ok")]
    failed = charge.find_element(By.CSS_SELECTOR, ".seg.s-failed")
    assert "payment gateway timeout (try 1)" in failed.get_attribute("title")
    sleep = browser.find_element(By.CSS_SELECTOR, '.wf-row[data-kind="sleep"][data-name="cooling_off"] .seg')
    assert (sleep.get_attribute("data-kind"), sleep.get_attribute("data-status")) == ("sleep", "ok")
    sig = browser.find_element(By.CSS_SELECTOR, '.wf-row[data-kind="signal"][data-name="approve"] .seg')
    assert (sig.get_attribute("data-kind"), sig.get_attribute("data-status")) == ("signal", "open")
    waits = [(li.get_attribute("data-kind"), li.get_attribute("data-name")) for li in browser.find_elements(By.CSS_SELECTOR, "#waiting li.wait")]
    assert waits == [("signal", "approve")]
    assert "times out" in browser.find_element(By.CSS_SELECTOR, "#waiting li.wait").text
    assert '"item": "gadget"' in browser.find_element(By.ID, "run-input").text
    kinds = [tr.get_attribute("data-kind") for tr in browser.find_elements(By.CSS_SELECTOR, "#journal tr.event")]
    assert kinds.count("step_attempt_failed") == 2 and kinds[0] == "run_started" and kinds[-1] == "wait_started"

    shot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == PNG and shot.stat().st_size > 20_000
    if os.environ.get("ACTORFLOW_DASHBOARD_SCREENSHOT"):  # how docs/dashboard.png is made
        shutil.copy(shot, os.environ["ACTORFLOW_DASHBOARD_SCREENSHOT"])

    browser.find_element(By.CSS_SELECTOR, "a.child-link").click()
    wait(browser).until(lambda d: d.current_url.endswith("/runs/order-2%2F3"))
    assert browser.find_element(By.ID, "run-workflow").text == "reserve"
    assert browser.find_element(By.ID, "run-result").text == '"held gadget"'
    assert browser.find_element(By.CSS_SELECTOR, ".crumbs a[href='/runs/order-2']").text == "order-2"

    browser.get(server.url + "/runs/doomed-1")
    assert "the report template is missing" in browser.find_element(By.ID, "run-error").text
    assert not browser.find_elements(By.ID, "signal-form") and not browser.find_elements(By.ID, "cancel-form")  # it has ended
    assert browser.find_elements(By.ID, "fork-form")  # a finished run can still be forked


def test_a_signal_sent_from_the_page_completes_the_waiting_run(browser: Any, server: Server, service: Service) -> None:
    browser.get(server.url + "/runs/order-1")
    assert browser.find_element(By.ID, "run-state").text == "waiting"
    assert browser.find_element(By.ID, "signal-name").get_attribute("value") == "approve"  # what it waits on
    browser.find_element(By.ID, "signal-payload").send_keys('"yes, ship it"')
    browser.find_element(By.ID, "signal-send").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "notice")))
    assert "queued" in browser.find_element(By.ID, "notice").text
    # the live engine in the other process applies it; the page refreshes itself when the journal moves
    wait(browser).until(lambda d: d.find_element(By.ID, "run-state").text == "completed")
    assert '"approved": "yes, ship it"' in browser.find_element(By.ID, "run-result").text
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#waiting li.command.ok"))
    with LmdbJournal(service.data_dir) as j:
        assert control.pending(j) == []
        assert [o.ok for o in control.outcomes(j, "order-1")] == [True]


def test_cancel_from_the_page(browser: Any, server: Server) -> None:
    browser.get(server.url + "/runs/hold-1")
    browser.find_element(By.ID, "cancel-send").click()
    wait(browser).until(ec.alert_is_present()).accept()  # "Cancel run hold-1?"
    wait(browser).until(lambda d: d.find_element(By.ID, "run-state").text == "cancelled")
    browser.refresh()
    assert not browser.find_elements(By.ID, "signal-form") and not browser.find_elements(By.ID, "cancel-form")


def test_read_only_hides_and_refuses_actions(browser: Any, readonly_server: Server, service: Service) -> None:
    browser.get(readonly_server.url + "/runs/order-2")
    assert browser.find_element(By.ID, "read-only").text == "read-only"
    assert browser.find_element(By.ID, "run-state").text == "waiting"
    assert not browser.find_elements(By.ID, "actions") and not browser.find_elements(By.ID, "signal-form")
    # a hand-made POST from the page itself is refused by the server all the same
    status = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch('/actions/signal', {method: 'POST', headers: {'Content-Type': 'application/x-www-form-urlencoded'},"
        " body: 'run_id=order-2&name=approve&payload=true&csrf=x'}).then(r => done(r.status));"
    )
    assert status == 403
    code, body = http(readonly_server.url + "/actions/cancel", {"run_id": "order-2", "csrf": "x"})
    assert code == 403 and "read-only" in body
    with LmdbJournal(service.data_dir) as j:
        assert control.pending(j, "order-2") == [] and j.get_run("order-2").state == "waiting"  # type: ignore[union-attr]


def test_a_bad_run_id_gives_a_clear_404_page(browser: Any, server: Server) -> None:
    browser.get(server.url + "/runs/no-such-run")
    assert browser.find_element(By.CSS_SELECTOR, "#error h1").text == "Run not found"
    assert "'no-such-run'" in browser.find_element(By.CSS_SELECTOR, "#error .message").text
    assert http(server.url + "/runs/no-such-run")[0] == 404
    assert http(server.url + "/api/runs/no-such-run")[0] == 404
    assert http(server.url + "/nothing-here")[0] == 404


def test_cross_site_writes_are_refused(server: Server, service: Service) -> None:
    page = http(server.url + "/runs/order-2")[1]
    token = page.split('name="csrf" value="')[1].split('"')[0]
    form = {"run_id": "order-2", "name": "approve", "payload": "true"}
    assert http(server.url + "/actions/signal", form)[0] == 403  # no token
    assert http(server.url + "/actions/signal", {**form, "csrf": "guess"})[0] == 403
    assert http(server.url + "/actions/signal", {**form, "csrf": token}, {"Origin": "http://evil.example"})[0] == 403
    assert http(server.url + "/actions/signal", {**form, "csrf": token}, {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert http(server.url + "/runs", headers={"Host": "evil.example"})[0] == 400  # DNS rebinding
    code, body = http(server.url + "/actions/signal", {**form, "csrf": token, "payload": "{not json"})
    assert code == 400 and "not JSON" in body
    with LmdbJournal(service.data_dir) as j:
        assert control.pending(j, "order-2") == []
    code, _ = http(server.url + "/actions/signal", {**form, "csrf": token}, {"Origin": server.url})
    assert code == 303  # the same request from the dashboard's own page goes through


def test_fork_from_a_step_creates_a_run_that_completes(browser: Any, server: Server, service: Service) -> None:
    browser.get(server.url + "/runs/report-3")
    options = [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "fork-step")).options]
    assert options == ["0", "1"]  # report has one step: rerun it, or keep it
    Select(browser.find_element(By.ID, "fork-step")).select_by_value("0")
    browser.find_element(By.ID, "fork-id").send_keys("report-3-again")
    browser.find_element(By.ID, "fork-send").click()
    wait(browser).until(lambda d: d.current_url.split("?")[0].endswith("/runs/report-3-again"))
    assert "forked from report-3" in browser.find_element(By.ID, "notice").text
    # written through the control inbox; the engine in the service loads it and runs the step again
    wait(browser).until(lambda d: d.find_element(By.ID, "run-state").text == "completed")
    assert browser.find_element(By.ID, "run-result").text == "6"
    with LmdbJournal(service.data_dir) as j:
        rec = j.get_run("report-3-again")
        assert rec is not None and rec.meta == {"forked_from": "report-3", "from_step": 0}
        assert [e.kind for e in j.events("report-3-again")].count("step_completed") == 1
    token = http(server.url + "/runs/report-3")[1].split('name="csrf" value="')[1].split('"')[0]
    code, body = http(server.url + "/actions/fork", {"run_id": "report-3", "from_step": "5", "csrf": token})
    assert code == 400 and "from_step=5 is out of range" in body
    code, body = http(server.url + "/actions/fork", {"run_id": "report-3", "from_step": "0", "new_run_id": "report-3-again", "csrf": token})
    assert code == 409 and "report-3-again" in body


def test_queues_dead_letters_requeue_and_schedules(browser: Any, server: Server, service: Service) -> None:
    browser.get(server.url + "/tasks")
    row = browser.find_element(By.CSS_SELECTOR, '#task-states tr.task[data-task="send_email"]')
    assert row.find_element(By.CSS_SELECTOR, 'td[data-state="queued"]').text == "1"
    assert [tr.get_attribute("data-priority") for tr in browser.find_elements(By.CSS_SELECTOR, "#depth tr.depth")] == ["5"]
    delayed = browser.find_element(By.CSS_SELECTOR, "#delayed tr.delayed")
    assert 3000 < float(delayed.get_attribute("data-due")) - time.time() <= 3600  # enqueued with delay=3600
    assert "min)" in delayed.find_element(By.CSS_SELECTOR, ".due").text

    browser.get(server.url + "/tasks/schedules")
    sched = browser.find_element(By.CSS_SELECTOR, '#schedules tr.schedule[data-name="send_email"]')
    assert 0 < float(sched.get_attribute("data-next")) - time.time() <= 3600  # the next hourly slot
    assert "in " in sched.find_element(By.CSS_SELECTOR, ".next").text

    browser.get(server.url + "/tasks/dead-letters")
    letter = browser.find_element(By.CSS_SELECTOR, 'tr.dead-letter[data-task="flaky"]')
    dead_id = letter.get_attribute("data-execution")
    assert "the mail server said no" in letter.text
    letter.find_element(By.CSS_SELECTOR, "button.requeue").click()
    wait(browser).until(ec.presence_of_element_located((By.ID, "notice")))
    assert "requeue of " + dead_id in browser.find_element(By.ID, "notice").text
    with LmdbJournal(service.data_dir) as j:
        deadline = time.monotonic() + TIMEOUT
        while (got := control.outcomes(j, dead_id)) == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) == 1 and got[0].ok and got[0].detail.startswith("requeued as ")
        new_id = got[0].detail.removeprefix("requeued as ")
        while (rec := j.get_run(new_id)) is None or not rec.finished:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert rec.state == "completed"  # the requeued execution succeeded
    browser.refresh()
    assert not browser.find_elements(By.CSS_SELECTOR, f'tr.dead-letter[data-execution="{dead_id}"]')


def test_read_only_refuses_fork_and_requeue(browser: Any, readonly_server: Server, service: Service) -> None:
    browser.get(readonly_server.url + "/runs/report-4")
    assert not browser.find_elements(By.ID, "fork-form")
    browser.get(readonly_server.url + "/tasks/dead-letters")
    assert not browser.find_elements(By.CSS_SELECTOR, "button.requeue")
    code, body = http(readonly_server.url + "/actions/fork", {"run_id": "report-4", "from_step": "0", "new_run_id": "ro-fork", "csrf": "x"})
    assert code == 403 and "read-only" in body
    code, body = http(readonly_server.url + "/actions/requeue", {"run_id": "report-4", "csrf": "x"})
    assert code == 403 and "read-only" in body
    with LmdbJournal(service.data_dir) as j:
        assert j.get_run("ro-fork") is None and control.pending(j) == []
