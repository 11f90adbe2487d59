"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, installed by the
Makefile), driven by Playwright: a broker started here with jobs in every set, login and CSRF
refusals, every page, pause/resume/clear, quiet, cancel, live updates, phone width, and
screenshots (into HOPPER_SCREENSHOTS, which `make screenshots` points at docs/screenshots)."""

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from hopper_broker.app import App
from hopper_client.schema.jobs import format_time
from tests.conftest import StartBroker
from tests.wire import SyncWire, Wire, job

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "s3cret"
PAGES = {
    "/": "Overview",
    "/queues": "Queues",
    "/workers": "Workers",
    "/cron": "Cron",
    "/retries": "Retries",
    "/scheduled": "Scheduled",
    "/dead": "Dead",
    "/history": "History",
    "/batches": "Batches",
    "/limits": "Limits",
}
# A request the page makes after a turn of its clock: a live update started in that turn has
# its answer by the time this one has (then an assertion that none changed the page holds).
SETTLE = "fetch(location.href, {headers: {'X-Partial': '1'}}).then((reply) => reply.text())"
WAIT_MS = 15_000  # the longest a page may take to show an effect (live updates: every 5 s)

pytestmark = [
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="no Chromium (`make install` adds it)"),
    pytest.mark.timeout(300),
]


async def fill(app: App) -> Wire:
    """Jobs in every set, a connected worker holding one, and a few minutes of chart; returns
    the worker's connection (it stays registered while that is open)."""
    assert app.dashboard is not None
    history = app.dashboard.history
    w = await Wire.open(app.port, hello={"hostname": "web-1", "wid": "w-7f3a", "pid": 4242})
    await history.sample()
    for turn in range(12):  # several chart intervals, each with its own processed and failed
        for i in range(turn % 5 + 2):
            jid = f"img-{turn:02d}-{i:02d}"
            await w.call("PUSH", job(jid, "ResizeImage", queue="images", args=[jid, 640]))
            await w.call("FETCH", "images")
            if i == 0 and turn % 3 == 0:
                failure = {"jid": jid, "errtype": "TimeoutError", "message": "upstream slow"}
                await w.call("FAIL", {**failure, "backtrace": ["resize.py:42 in resize"]})
            else:
                await w.call("ACK", {"jid": jid})
        await history.sample()
    for i in range(3):
        await w.call("PUSH", job(f"mail-000{i}", "SendEmail", queue="mail", args=[i]))
    await w.call("PUSH", job("report-0001", "Report", queue="reports", at="2099-01-01T00:00:00Z"))
    dead = {"jid": "dead-0001", "errtype": "KeyError", "message": "no such user"}
    await w.call("PUSH", job("dead-0001", "SyncUser", queue="default", retry=1))
    requeue = {"cmd": "requeue", "target": "retries", "filter": {"jids": ["dead-0001"]}}
    for _ in range(2):  # fails, is retried at once, fails again: dead
        await w.call("FETCH", "default")
        await w.call("FAIL", {**dead, "backtrace": ["sync.py:7 in sync", "db.py:99 in get"]})
        await w.call("MUTATE", requeue)
    await fill_sets(w)
    await w.call("PUSH", job("slow-0001", "Transcode", queue="video", args=["movie.mp4"]))
    await w.call("FETCH", "video")
    track = {"jid": "slow-0001", "percent": 40, "desc": "pass 2 of 5"}
    await w.call("TRACK", f"SET {json.dumps(track)}")
    await w.call("JOB", 'LOG {"jid":"slow-0001","line":"opened movie.mp4"}')
    return w


async def fill_sets(w: Wire) -> None:
    """Retries (an hour away: the test is over before they run again), scheduled, dead."""
    hour = {"backoff": {"kind": "fixed", "delay": 3600}}
    failures = [
        ("charge-0001", "ChargeCard", "billing", 3, "CardDeclined", "card declined: do not honor"),
        ("charge-0002", "ChargeCard", "billing", 3, "CardDeclined", "card declined: expired"),
        ("charge-0003", "ChargeCard", "billing", 3, "GatewayTimeout", "no answer in 30 s"),
        ("hook-0001", "PostWebhook", "hooks", 3, "ConnectionError", "connection refused"),
        ("import-0001", "ImportCsv", "imports", -1, "ValueError", "row 17: bad date '31/02'"),
        ("import-0002", "ImportCsv", "imports", -1, "UnicodeDecodeError", "byte 0xff at 4"),
    ]
    for jid, jobtype, queue, retry, errtype, message in failures:
        args = [jid, {"customer": 4711, "amount": 1999, "currency": "EUR"}]
        pushed = job(jid, jobtype, queue=queue, retry=retry, args=args, custom=hour)
        await w.call("PUSH", pushed)
        await w.call("FETCH", queue)
        await w.call("FAIL", {"jid": jid, "errtype": errtype, "message": message})
    for i, (jobtype, queue) in enumerate([("SendDigest", "mail-later"), ("Cleanup", "chores")]):
        at = format_time(time.time() + 3600 * (i + 1))
        await w.call("PUSH", job(f"later-000{i}", jobtype, queue=queue, args=[i], at=at))


def drive(port: int, broker_port: int, shots: Path) -> None:
    """Everything the browser does (sync Playwright, in a thread of its own)."""
    from playwright.sync_api import expect, sync_playwright

    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("dialog", lambda dialog: dialog.accept())

        # login: a page sends to the form; a wrong password, a POST without token: refused
        page.goto(f"{base}/queues")
        expect(page).to_have_url(f"{base}/login?next=/queues")
        page.screenshot(path=shots / "login.png")
        refused = page.request.post(f"{base}/queues/drain", form={"on": "1"})
        assert refused.status == 401
        page.fill("input[name=password]", "wrong")
        page.click("button:text('Log in')")
        expect(page.locator(".error")).to_have_text("Wrong password.")
        page.fill("input[name=password]", PASSWORD)
        page.click("button:text('Log in')")
        expect(page).to_have_url(f"{base}/queues")
        forged = page.request.post(f"{base}/queues/drain", form={"on": "1", "csrf": "x" * 32})
        assert forged.status == 403
        expect(page.locator("text=The broker drains")).to_have_count(0)

        # every page loads, with its title and the navigation
        for path, title in PAGES.items():
            page.goto(base + path)
            expect(page.locator("main h1")).to_have_text(title)
            expect(page.locator("nav a")).to_have_count(len(PAGES))

        # overview: figures and the chart, then a live update without a reload
        page.goto(base + "/")
        expect(page.locator(".chart polyline.processed")).to_have_count(1)
        row = page.locator("tr[data-queue=mail]")
        expect(row.locator("td.num").first).to_have_text("3")
        page.screenshot(path=shots / "overview.png", full_page=True)
        SyncWire(broker_port, hello={"hostname": "h"}).call("PUSH", job("mail-0009", queue="mail"))
        expect(row.locator("td.num").first).to_have_text("4", timeout=WAIT_MS)

        # queues: pause, resume, clear (each confirmed)
        page.goto(base + "/queues")
        row = page.locator("tr[data-queue=mail]")
        row.locator("button:text('Pause')").click()
        expect(row.locator("td.state")).to_have_text("paused")
        page.screenshot(path=shots / "queues.png", full_page=True)
        row.locator("button:text('Resume')").click()
        expect(row.locator("td.state")).to_have_text("running")
        row.locator("button:text('Clear')").click()
        expect(page.locator("tr[data-queue=mail]")).to_have_count(0)

        # workers: the held job, then quiet
        page.goto(base + "/workers")
        worker = page.locator("tr[data-wid=w-7f3a]")
        expect(worker).to_contain_text("slow-0001")
        expect(worker).to_contain_text(re.compile(r"since \d+s ago"))
        page.screenshot(path=shots / "workers.png", full_page=True)
        worker.locator("button:text('Quiet')").click()
        expect(worker.locator("td.state")).to_have_text("quiet")

        # retries: two selected and retried at once, one killed; scheduled; dead: one deleted
        page.goto(base + "/retries")
        for jid in ("charge-0001", "charge-0002"):
            page.locator(f"tr[data-jid={jid}] input[type=checkbox]").check()
        expect(page.locator("form#selection .selected-count")).to_have_text("2")
        page.screenshot(path=shots / "retries.png", full_page=True)
        page.locator("form#selection button:text('Retry now')").click()
        expect(page.locator(".done")).to_have_text("Retried 2 jobs.")
        expect(page.locator("tr[data-jid^=charge-000]")).to_have_count(1)
        page.locator("tr[data-jid=charge-0003] button:text('Kill')").click()
        expect(page.locator(".done")).to_have_text("Killed 1 job.")
        expect(page.locator("tr[data-jid=charge-0003]")).to_have_count(0)
        page.fill("input[name=error]", "refused")
        page.press("input[name=error]", "Enter")
        expect(page.locator("tbody tr[data-jid]")).to_have_count(1)
        expect(page.locator("tr[data-jid=hook-0001]")).to_contain_text("ConnectionError")
        page.goto(base + "/scheduled")
        expect(page.locator("tr[data-jid=report-0001]")).to_contain_text("Report")
        expect(page.locator("tr[data-jid=later-0001]")).to_contain_text("(in 2 h)")
        page.screenshot(path=shots / "scheduled.png", full_page=True)
        page.goto(base + "/dead")
        expect(page.locator("tr[data-jid=charge-0003]")).to_contain_text("GatewayTimeout")
        page.screenshot(path=shots / "dead.png", full_page=True)
        page.locator("tr[data-jid=import-0002] button:text('Delete')").click()
        expect(page.locator(".done")).to_have_text("Deleted 1 job.")
        expect(page.locator("tr[data-jid=import-0002]")).to_have_count(0)
        expect(page.locator("tr[data-jid=import-0001]")).to_have_count(1)
        # live updates (the page's clock driven here) keep a selection; without one they run
        page.clock.install()
        page.reload()
        ticked = page.locator("tr[data-jid=import-0001] input[type=checkbox]")
        ticked.check()
        SyncWire(broker_port, hello={"hostname": "h"}).call(
            "MUTATE", {"cmd": "kill", "target": "scheduled", "filter": {"jids": ["later-0000"]}}
        )
        page.clock.run_for(12_000)  # two turns: the selection holds them back
        page.evaluate(SETTLE)
        expect(ticked).to_be_checked()
        expect(page.locator("tr[data-jid=later-0000]")).to_have_count(0)
        ticked.uncheck()
        page.clock.run_for(6_000)
        expect(page.locator("tr[data-jid=later-0000]")).to_have_count(1, timeout=WAIT_MS)
        page.fill("input[name=jobtype]", "ImportCsv")  # typed, not applied, then elsewhere
        page.locator("main h1").click()
        page.clock.run_for(12_000)
        page.evaluate(SETTLE)
        expect(page.locator("input[name=jobtype]")).to_have_value("ImportCsv")

        # job pages: a running job's progress and log, a dead job's failure, cancel
        page.goto(f"{base}/jobs/slow-0001")
        expect(page.locator("main")).to_contain_text("pass 2 of 5")
        expect(page.locator("pre.log")).to_contain_text("opened movie.mp4")
        page.goto(f"{base}/jobs/dead-0001")
        expect(page.locator("#job-state")).to_have_text("dead")
        expect(page.locator("pre.backtrace")).to_contain_text("db.py:99 in get")
        page.screenshot(path=shots / "job.png", full_page=True)
        page.goto(f"{base}/history?state=done")
        expect(page.locator("tr[data-jid=img-11-01] td.state")).to_have_text("done")
        page.screenshot(path=shots / "history.png", full_page=True)
        page.fill("header input[name=jid]", "report-0001")
        page.press("header input[name=jid]", "Enter")
        expect(page.locator("#job-state")).to_have_text("scheduled")
        page.locator("button:text('Cancel')").click()
        expect(page.locator("#job-state")).to_have_text("cancelled")

        # a phone: nothing wider than the screen
        phone = browser.new_page(viewport={"width": 390, "height": 844})
        phone.context.add_cookies(page.context.cookies())
        phone.goto(base + "/")
        expect(phone.locator("main h1")).to_have_text("Overview")
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{overflow}px wider than a phone"
        phone.screenshot(path=shots / "overview-phone.png", full_page=True)
        phone.goto(base + "/retries")
        expect(phone.locator("main h1")).to_have_text("Retries")
        overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"retries: {overflow}px wider than a phone"
        browser.close()


async def test_dashboard_in_a_browser(start_broker: StartBroker, tmp_path: Path) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0", dashboard_password=PASSWORD)
    worker = await fill(app)
    shots = Path(os.environ.get("HOPPER_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    args: tuple[Any, ...] = (app.dashboard_port, app.port, shots)
    await trio.to_thread.run_sync(drive, *args)
    names = ("login", "overview", "queues", "workers", "retries", "scheduled", "dead", "job")
    for name in (*names, "history", "overview-phone"):
        assert (shots / f"{name}.png").stat().st_size > 1000
    await worker.aclose()
