"""The dashboard over real HTTP (no browser): settings and refusals, login, CSRF, actions; as on
one Redis, in split mode and on the cluster rig."""

import json
import re
import socket

import httpx
import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.config import Config
from hopper_broker.web import set_actions
from tests.conftest import StartBroker, eventually
from tests.proxy import BlackholeProxy
from tests.wire import Wire, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

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


def test_cli_refuses_an_open_dashboard(capsys: pytest.CaptureFixture[str]) -> None:
    from hopper_broker.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["run", "--dashboard-bind", "0.0.0.0:0"])
    assert exited.value.code == 2
    assert "refusing to serve the dashboard" in capsys.readouterr().err


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


async def fill_sets(wire: Wire) -> None:
    """Three jobs in retries, three scheduled, two dead."""
    failures = [
        ("retry-0001", "Mail", "mail", "TimeoutError", "upstream slow"),
        ("retry-0002", "Mail", "mail", "KeyError", "no such user"),
        ("retry-0003", "Sync", "other", "TimeoutError", "db slow"),
        ("dead-0001", "Mail", "mail", "ValueError", "bad address"),
        ("dead-0002", "Sync", "other", "ValueError", "bad row"),
    ]
    for jid, jobtype, queue, errtype, message in failures:
        retry = -1 if jid.startswith("dead") else 5
        pushed = job(jid, jobtype, queue=queue, retry=retry, args=[jid, "x" * 200])
        assert await wire.call("PUSH", pushed) == b"OK"
        assert await wire.call("FETCH", queue)
        failed = {"jid": jid, "errtype": errtype, "message": message}
        assert await wire.call("FAIL", failed) == b"OK"
    for i in range(1, 4):
        later = job(f"sched-000{i}", "Report", queue="reports", at=f"2099-01-0{i}T00:00:00Z")
        assert await wire.call("PUSH", later) == b"OK"


def listed(page: str) -> list[str]:
    return re.findall(r'<tr data-jid="([^"]+)"', page)


async def test_set_pages_and_filters(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    await fill_sets(wire)
    async with client(app) as http:
        retries = (await http.get("/retries")).text
        assert sorted(listed(retries)) == ["retry-0001", "retry-0002", "retry-0003"]
        assert "<strong>KeyError</strong>: no such user" in retries
        assert "…</code>" in retries  # args shortened
        assert "Kill all" in retries and "Next attempt" in retries
        assert sorted(listed((await http.get("/dead")).text)) == ["dead-0001", "dead-0002"]
        dead = (await http.get("/dead")).text
        assert "Kill" not in dead and "Died" in dead and "bad address" in dead
        scheduled = (await http.get("/scheduled")).text
        assert listed(scheduled) == ["sched-0001", "sched-0002", "sched-0003"]
        assert "2099-01-02T00:00:00Z" in scheduled and "Runs at" in scheduled
        by_type = (await http.get("/retries", params={"jobtype": "Mail"})).text
        assert sorted(listed(by_type)) == ["retry-0001", "retry-0002"]
        assert "Looked at 3 entries." in by_type
        by_error = (await http.get("/retries", params={"error": "timeout"})).text
        assert sorted(listed(by_error)) == ["retry-0001", "retry-0003"]
        assert listed((await http.get("/retries", params={"queue": "other"})).text) == [
            "retry-0003"
        ]
        none = (await http.get("/dead", params={"jobtype": "Nothing"})).text
        assert listed(none) == [] and "No job in dead matches." in none
        partial = await http.get("/retries", headers={"X-Partial": "1"})
        assert "<nav>" not in partial.text and len(listed(partial.text)) == 3
        bad = await http.get("/retries", params={"queue": "no such queue!"})
        assert bad.status_code == 400 and "queue names must match" in bad.text
        assert (await http.get("/dead", params={"cursor": "nope"})).status_code == 400
    await wire.aclose()


async def test_set_pages_walk_by_cursor(
    start_broker: StartBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    for i in range(1100):  # the last few of another jobtype, after a filter's scan window
        jobtype = "Rare" if i >= 1095 else "Common"
        at = f"2099-01-01T00:{i // 60:02d}:{i % 60:02d}Z"
        assert await wire.call("PUSH", job(f"many-{i:04d}", jobtype, at=at)) == b"OK"
    async with client(app) as http:
        seen: list[str] = []
        address: str | None = "/scheduled"
        for _ in range(30):
            if address is None:
                break
            text = (await http.get(address)).text
            seen += listed(text)
            found = re.search(r'href="([^"]+)" class="next"', text)
            address = found.group(1).replace("&amp;", "&") if found else None
        assert seen == [f"many-{i:04d}" for i in range(1100)]  # each once, in order
        rare = (await http.get("/scheduled", params={"jobtype": "Rare"})).text
        assert listed(rare) == [] and "Looked at 1000 entries, more to look at." in rare
        assert "No match among these entries" in rare
        found = re.search(r'href="([^"]+)" class="next"', rare)
        assert found, rare
        more = (await http.get(found.group(1).replace("&amp;", "&"))).text
        assert listed(more) == [f"many-{i:04d}" for i in range(1095, 1100)]
        assert 'class="first"' in more and 'class="next"' not in more
        # "all matching" acts a page at a time and says when it stopped at its bound
        monkeypatch.setattr(set_actions, "MAX_PAGES", 1)
        every = {"op": "delete", "all": "1", "jobtype": "Common", "csrf": await token(http)}
        reply = await http.post("/scheduled/act", data=every)
        assert reply.headers["location"] == "/scheduled?done=delete%3A1000%3Amore"
        said = (await http.get(reply.headers["location"])).text
        assert "Deleted 1000 jobs. It stopped at its bound: more may match" in said
        reply = await http.post("/scheduled/act", data=every)
        assert reply.headers["location"] == "/scheduled?done=delete%3A95"
        left = listed((await http.get("/scheduled")).text)
        assert left == [f"many-{i:04d}" for i in range(1095, 1100)]
    await wire.aclose()


async def test_set_actions(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    await fill_sets(wire)
    async with client(app) as http:
        csrf = await token(http, "/retries")
        # CSRF: refused without the token or with a wrong one, nothing moves
        one = {"op": "retry", "jid": "retry-0001"}
        assert (await http.post("/retries/act", data=one)).status_code == 403
        assert (await http.post("/retries/act", data={**one, "csrf": "0" * 32})).status_code == 403
        assert "retry-0001" in listed((await http.get("/retries")).text)
        for target in ("scheduled", "dead"):
            no_token = {"op": "delete", "all": "1"}
            assert (await http.post(f"/{target}/act", data=no_token)).status_code == 403
        assert len(listed((await http.get("/dead")).text)) == 2
        # one: retry now, back to the page (its filters kept) saying what was done
        back = "/retries?queue=mail"
        reply = await http.post("/retries/act", data={**one, "csrf": csrf, "back": back})
        assert reply.status_code == 303
        assert reply.headers["location"] == "/retries?queue=mail&done=retry%3A1"
        shown = (await http.get(reply.headers["location"])).text
        assert "Retried 1 job." in shown and listed(shown) == ["retry-0002"]
        assert b"retry-0001" in await wire.call("FETCH", "mail")
        # a selection: kill two (one of them no longer there: counted as not done)
        kill = {"op": "kill", "jid": ["retry-0002", "retry-0003", "retry-0001"], "csrf": csrf}
        reply = await http.post("/retries/act", data=kill)
        assert reply.headers["location"] == "/retries?done=kill%3A2"
        assert listed((await http.get("/retries")).text) == []
        dead = listed((await http.get("/dead")).text)
        assert sorted(dead) == ["dead-0001", "dead-0002", "retry-0002", "retry-0003"]
        # delete one dead job; kill is not an action of the dead set
        reply = await http.post(
            "/dead/act", data={"op": "delete", "jid": "dead-0001", "csrf": csrf}
        )
        assert reply.headers["location"] == "/dead?done=delete%3A1"
        assert "dead-0001" not in listed((await http.get("/dead")).text)
        refused = await http.post(
            "/dead/act", data={"op": "kill", "jid": "dead-0002", "csrf": csrf}
        )
        assert refused.status_code == 400 and "no such action on dead: kill" in refused.text
        empty = await http.post("/dead/act", data={"op": "delete", "csrf": csrf})
        assert empty.status_code == 400 and "no job selected" in empty.text
        # all matching a filter: only those, however many pages
        every = {"op": "retry", "all": "1", "jobtype": "Sync", "csrf": csrf, "back": "/dead"}
        reply = await http.post("/dead/act", data=every)
        assert reply.headers["location"] == "/dead?done=retry%3A2"
        assert "Retried 2 jobs." in (await http.get(reply.headers["location"])).text
        assert sorted(listed((await http.get("/dead")).text)) == ["retry-0002"]
        kill_all = {"op": "kill", "all": "1", "csrf": csrf}
        reply = await http.post("/scheduled/act", data=kill_all)
        assert reply.headers["location"] == "/scheduled?done=kill%3A3"
        assert listed((await http.get("/scheduled")).text) == []
        assert len(listed((await http.get("/dead")).text)) == 4
        forged = await http.get("/dead", params={"done": "<b>pwned</b>:1"})
        assert "pwned" not in forged.text
    await wire.aclose()


async def test_batches_and_limits_pages(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={})
    callback = {"jobtype": "Done", "args": [], "queue": "cb"}
    spec = {"description": "import <b>", "success": callback}
    bid = (await wire.call("BATCH", "NEW " + json.dumps(spec))).decode()
    await wire.call("PUSH", job("batched-001", custom={"bid": bid}))
    await wire.call("PUSH", job("mailjob-01", "Mail", queue="mail"))  # listed: INFO shows it
    await wire.call("QUEUE", "SET mail concurrency=3 Mail.rate=20")
    async with client(app) as http:
        page = (await http.get("/batches")).text
        assert f'data-bid="{bid}"' in page and "import &lt;b&gt;" in page
        row = page.split(f'data-bid="{bid}"')[1].split("</tr>")[0]
        assert re.findall(r'class="num">(\d+)<', row) == ["1", "1", "0"]  # total, pending, failed
        assert row.count("<td>waiting</td>") == 2
        limits = (await http.get("/limits")).text
        mail = limits.split('data-queue="mail"')[1].split("</tr>")[0]
        assert "concurrency = 3" in mail and "<code>Mail</code>" in mail and "rate = 20" in mail
    await wire.aclose()


async def test_pages_say_when_redis_does_not_answer(nursery: trio.Nursery, redis_url: str) -> None:
    proxy = BlackholeProxy(redis_url.removeprefix("unix://"))
    await nursery.start(proxy.run)
    app = await StartBroker(nursery, proxy.url)(dashboard_bind="127.0.0.1:0", redis_timeout=0.5)
    async with client(app) as http:
        assert (await http.get("/queues")).status_code == 200
        proxy.blackhole()
        for path in ("/", "/queues", "/workers", "/batches", "/limits", "/history",
                     "/dead", "/jobs/nobody"):  # fmt: skip
            reply = await http.get(path, timeout=10)
            assert reply.status_code == 503 and "Redis did not answer" in reply.text, path
        bad = await http.get("/dead", params={"cursor": "nope"})  # refused before Redis is asked
        assert bad.status_code == 400
