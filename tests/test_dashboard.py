"""The dashboard over real HTTP (no browser): settings and refusals, login, CSRF, actions."""

import re
import socket

import httpx
import pytest
import redis

from broker.app import App
from broker.config import Config
from tests.conftest import StartBroker, eventually
from tests.wire import Wire, job

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def client(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.dashboard_port}")


async def token(http: httpx.AsyncClient, path: str = "/queues") -> str:
    reply = await http.get(path)
    found = CSRF.search(reply.text)
    assert found, reply.text
    return found.group(1)


def test_settings_refuse_an_open_dashboard_without_a_password() -> None:
    with pytest.raises(ValueError, match=r"dashboard on 0\.0\.0\.0 without a password"):
        Config(dashboard_bind="0.0.0.0:7420").check()
    Config(dashboard_bind="0.0.0.0:7420", dashboard_password="s3cret").check()
    Config(dashboard_bind="0.0.0.0:7420", bind="0.0.0.0:7419", password="s3cret").check()
    Config(dashboard_bind="off", bind="127.0.0.1:7419").check()


def test_cli_refuses_an_open_dashboard(tmp_path: object) -> None:
    from broker.__main__ import main

    with pytest.raises(SystemExit, match="refusing to serve the dashboard"):
        main(["run", "--dashboard-bind", "0.0.0.0:0"])


async def test_off_and_port_in_use(start_broker: StartBroker) -> None:
    off = await start_broker()
    assert off.dashboard is None and off.dashboard_port == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = await start_broker(dashboard_bind=f"127.0.0.1:{port}")
        assert app.dashboard_port == 0  # no dashboard, yet the broker serves jobs
        wire = await Wire.open(app.port, hello={"hostname": "h"})
        assert await wire.call("PUSH", job("jobid-0001")) == b"OK"
        await wire.aclose()


async def test_open_dashboard_pages_and_csrf(start_broker: StartBroker, rdb: redis.Redis) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    assert await wire.call("PUSH", job("jobid-0001", queue="q1")) == b"OK"
    async with client(app) as http:
        for path in ("/", "/queues", "/workers", "/cron", "/retries", "/scheduled", "/dead"):
            reply = await http.get(path)
            assert reply.status_code == 200, path
            assert 'href="/batches"' in reply.text
        assert (await http.get("/jobs/jobid-0001")).status_code == 200
        assert (await http.get("/jobs/nope-nope-nope")).status_code == 404
        partial = await http.get("/queues", headers={"X-Partial": "1"})
        assert "<nav>" not in partial.text and 'data-queue="q1"' in partial.text
        # no token, a wrong one, another origin: refused, nothing changes
        form = {"queue": "q1", "op": "pause"}
        assert (await http.post("/queues/act", data=form)).status_code == 403
        bad = {**form, "csrf": "0" * 32}
        assert (await http.post("/queues/act", data=bad)).status_code == 403
        good = {**form, "csrf": await token(http)}
        evil = {"Origin": "http://evil.example"}
        assert (await http.post("/queues/act", data=good, headers=evil)).status_code == 403
        assert "paused" not in (await http.get("/queues")).text.split("<tbody>")[1]
        # with the token: done, back to the page
        reply = await http.post("/queues/act", data=good)
        assert reply.status_code == 303 and reply.headers["location"] == "/queues"
        assert 'badge warn">paused' in (await http.get("/queues")).text
        assert await wire.call("FETCH", "q1") is None  # paused, as QUEUE PAUSE does
        odd = await http.post("/queues/act", data={**good, "op": "explode"})
        assert odd.status_code == 400 and "no such queue action: explode" in odd.text
    await wire.aclose()


async def test_login(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0", dashboard_password="s3cret")
    async with client(app) as http:
        reply = await http.get("/queues")
        assert reply.status_code == 303 and reply.headers["location"] == "/login?next=/queues"
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", auth=("any", "s3cret"))).status_code == 200
        assert (await http.get("/metrics", auth=("any", "wrong"))).status_code == 401
        csrf = await token(http, "/login")
        # refused: not logged in (401 before any CSRF check), then no token, then wrong password
        assert (await http.post("/queues/drain", data={"on": "1"})).status_code == 401
        login = {"password": "s3cret", "next": "/queues"}
        assert (await http.post("/login", data=login)).status_code == 403
        wrong = await http.post("/login", data={**login, "password": "no", "csrf": csrf})
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        reply = await http.post("/login", data={**login, "csrf": csrf})
        assert reply.status_code == 303 and reply.headers["location"] == "/queues"
        assert (await http.get("/queues")).status_code == 200
        drain = {"on": "1", "csrf": csrf}
        assert (await http.post("/queues/drain", data=drain)).status_code == 303

        async def drained() -> bool:
            return "The broker drains" in (await http.get("/queues")).text

        await eventually(drained)
        assert (await http.post("/logout", data={"csrf": csrf})).status_code == 303
        assert (await http.get("/queues")).status_code == 303


async def test_workers_page_and_signals(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    worker = await Wire.open(app.port, hello={"hostname": "box", "wid": "w-quiet", "pid": 42})
    assert await worker.call("PUSH", job("jobid-0001", queue="q1")) == b"OK"
    assert await worker.call("FETCH", "q1")
    async with client(app) as http:
        page = (await http.get("/workers")).text
        assert "w-quiet" in page and "jobid-0001" in page and "box · 42" in page
        csrf = await token(http, "/workers")
        quiet = {"wid": "w-quiet", "state": "quiet", "csrf": csrf}
        assert (await http.post("/workers/act", data=quiet)).status_code == 303
        assert await worker.call("BEAT", {"wid": "w-quiet"}) == b'{"state":"quiet"}'
        unknown = {"wid": "nobody", "state": "quiet", "csrf": csrf}
        reply = await http.post("/workers/act", data=unknown)
        assert reply.status_code == 400 and "unknown worker nobody" in reply.text
        bad = {"wid": "w-quiet", "state": "running", "csrf": csrf}
        assert (await http.post("/workers/act", data=bad)).status_code == 400
    await worker.aclose()


async def test_job_page_escapes_and_shows_the_result(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    hostile = job("jobid-0002", "<b>Bold</b>", args=["<script>alert(1)</script>"])
    assert await wire.call("PUSH", hostile) == b"OK"
    assert await wire.call("FETCH", "default")
    assert await wire.call("ACK", {"jid": "jobid-0002", "result": {"rows": 7}}) == b"OK"
    async with client(app) as http:
        page = (await http.get("/jobs/jobid-0002")).text
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<b>Bold" not in page and "&lt;b&gt;Bold" in page
        assert 'id="job-state">done<' in page and "&#34;rows&#34;: 7" in page
        assert (await http.get("/login")).headers["location"] == "/"  # no password: no login
    await wire.aclose()


async def test_history_pages(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    for i in range(60):
        assert await wire.call("PUSH", job(f"past-{i:04d}", "Old", queue="old")) == b"OK"
        assert await wire.call("FETCH", "old")
        assert await wire.call("ACK", {"jid": f"past-{i:04d}"}) == b"OK"
    async with client(app) as http:
        first = (await http.get("/history", params={"queue": "old", "state": "done"})).text
        assert first.count('<tr data-jid="past-') == 50 and 'data-jid="past-0059"' in first
        older = re.search(r'href="(/history\?[^"]+)" class="older"', first)
        assert older, first
        second = (await http.get(older.group(1).replace("&amp;", "&"))).text
        assert second.count('<tr data-jid="past-') == 10 and 'data-jid="past-0000"' in second
        assert 'class="older"' not in second
        none = (await http.get("/history", params={"state": "dead"})).text
        assert "No archived job matches." in none
        bad = await http.get("/history", params={"queue": "no such queue!"})
        assert bad.status_code == 400
        job_page = (await http.get("/jobs/past-0003")).text
        assert "History: done" in job_page
    await wire.aclose()
