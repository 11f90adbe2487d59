"""The HTTP worker (hopper-http-worker) against a real broker and a real downstream HTTP server
on 127.0.0.1 (http.server in threads): what each answer does to the job, routing, auth,
timeouts, dropped connections, accepted jobs and their callbacks, the concurrency bound."""

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient, JobEvent, JobFailed
from hopper_client.http import HttpConfig, HttpWorker, load, plan
from hopper_client.http.config import Callback, ConfigError, Route
from hopper_client.http.deliver import retry_after
from tests.conftest import StartBroker, eventually

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

WAIT = 10.0  # seconds: the bound of every wait here
SECRET = "callback-secret"


class Downstream:
    """A threaded HTTP server whose paths behave as their names say; records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets /hang and /gate answer
        self.full = threading.Event()  # /gate holds two requests
        self.in_flight = self.most = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append((self.path, dict(self.headers), body))
                owner.answer(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        path = handler.path
        if path == "/hang":
            self.release.wait(WAIT)
            return
        if path == "/drop":
            return  # closed without an answer
        if path == "/gate":
            with self.lock:
                self.in_flight += 1
                self.most = max(self.most, self.in_flight)
                if self.in_flight == 2:
                    self.full.set()
            self.release.wait(WAIT)
            with self.lock:
                self.in_flight -= 1
        if path == "/slow":
            time.sleep(0.3)  # the behaviour under test: a slow answer within the timeout
        seen = sum(1 for p, _, b in self.requests if b["jid"] == body["jid"])
        status, headers, text = 200, {"Content-Type": "application/json"}, "{}"
        if path == "/ok":
            text = json.dumps({"got": body["args"], "attempt": body["attempt"]})
        elif path == "/text":
            headers, text = {"Content-Type": "text/plain"}, "fine"
        elif path == "/error":
            status, text = 500, "boom"
        elif path == "/busy" and seen == 1:
            status, headers, text = 429, {"Retry-After": "1"}, "slow down"
        elif path == "/missing":
            status, text = 404, "no such widget " * 200
        elif path == "/accept":
            status, text = 202, ""
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(text.encode())))
        handler.end_headers()
        handler.wfile.write(text.encode())

    def seen(self, path: str) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        with self.lock:
            return [r for r in self.requests if r[0] == path]


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    server = Downstream()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.server.shutdown()
        server.server.server_close()


@pytest.fixture
async def client(broker: App) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as producer:
        yield producer


async def start(
    nursery: trio.Nursery, broker: App, downstream: Downstream, **settings: Any
) -> HttpWorker:
    """An HTTP worker whose default route is downstream's `/ok` unless `settings` say."""
    settings.setdefault("default", Route(url=f"{downstream.url}/ok"))
    config = HttpConfig(url=f"tcp://127.0.0.1:{broker.port}", **settings)
    worker = HttpWorker(plan(config), heartbeat=0.05)
    await nursery.start(worker.arun)
    return worker


def route(downstream: Downstream, path: str, **options: Any) -> Route:
    return Route(url=f"{downstream.url}{path}", **options)


async def next_event(stream: Any, *kinds: str) -> JobEvent:
    """The next event of these kinds (bounded)."""
    with trio.fail_after(WAIT):
        async for event in stream:
            if event.event in kinds:
                return event  # type: ignore[no-any-return]
    raise AssertionError("the stream ended")


async def test_2xx_acks_with_the_json_answer_as_result_and_sends_the_job(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    worker = await start(nursery, broker, downstream, routes={"t": route(downstream, "/text")})
    jid = await client.push("resize", ["cat.png", 64], custom={"trace": "x"}, queue="default")
    with trio.fail_after(WAIT):
        assert await client.result(jid) == {"got": ["cat.png", 64], "attempt": 1}
        assert await client.result(await client.push("t")) is None  # not JSON: no result
    [(_, headers, body)] = downstream.seen("/ok")
    assert body == {
        "jid": jid,
        "jobtype": "resize",
        "args": ["cat.png", 64],
        "custom": {"trace": "x"},
        "queue": "default",
        "attempt": 1,
        "callback": None,
    }
    assert headers["Idempotency-Key"] == headers["Hopper-Jid"] == jid
    assert headers["Content-Type"] == "application/json"
    worker.terminate()


async def test_500_fails_the_job_for_a_retry(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    worker = await start(nursery, broker, downstream, default=route(downstream, "/error"))
    async with client.events(events=["failed", "dead", "done"]) as stream:
        jid = await client.push("call", [1], retry=3)
        event = await next_event(stream, "failed", "dead", "done")
    assert (event.event, event.jid, event.errtype) == ("failed", jid, "DownstreamError")
    state = await client.state(jid)
    assert state.state == "retrying" and state.failure is not None
    assert state.failure.message == "HTTP 500: boom" and state.failure.remaining == 3
    worker.terminate()


async def test_429_with_retry_after_snoozes_without_a_failure(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    worker = await start(nursery, broker, downstream, default=route(downstream, "/busy"))
    async with client.events(events=["snoozed", "failed", "done"]) as stream:
        jid = await client.push("call", retry=0)  # a failure would discard it
        snoozed = await next_event(stream, "snoozed", "failed", "done")
        assert snoozed.event == "snoozed" and snoozed.run_at is not None
        assert snoozed.run_at - snoozed.at == pytest.approx(1.0, abs=0.3)
        assert (await next_event(stream, "failed", "done")).event == "done"
    state = await client.state(jid)
    assert state.state == "done" and state.failure is None
    assert len(downstream.seen("/busy")) == 2
    worker.terminate()


async def test_404_sends_the_job_to_the_dead_set_with_the_answer(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    worker = await start(nursery, broker, downstream, default=route(downstream, "/missing"))
    jid = await client.push("call", retry=25)
    with trio.fail_after(WAIT), pytest.raises(JobFailed, match="dead: DownstreamRejected"):
        await client.result(jid)
    failure = (await client.state(jid)).failure
    assert failure is not None and failure.remaining == 25
    cut = ("no such widget " * 200)[:900]  # max_error_body; the broker trims the space
    assert failure.message == f"HTTP 404: {cut}".rstrip()
    assert len(downstream.seen("/missing")) == 1
    worker.terminate()


@pytest.mark.parametrize(
    ("path", "errtype"), [("/hang", "DownstreamTimeout"), ("/drop", "DownstreamUnreachable")]
)
async def test_a_hanging_or_dropping_downstream_fails_the_job_for_a_retry(
    broker: App,
    client: AsyncClient,
    downstream: Downstream,
    nursery: trio.Nursery,
    path: str,
    errtype: str,
) -> None:
    worker = await start(nursery, broker, downstream, default=route(downstream, path, timeout=0.5))
    async with client.events(events=["failed", "dead", "done"]) as stream:
        jid = await client.push("call", retry=2)
        event = await next_event(stream, "failed", "dead", "done")
    assert (event.event, event.jid, event.errtype) == ("failed", jid, errtype)
    assert (await client.state(jid)).state == "retrying"
    worker.terminate()


async def test_a_slow_answer_within_the_timeout_acks(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    worker = await start(nursery, broker, downstream, default=route(downstream, "/slow"))
    with trio.fail_after(WAIT):
        assert await client.result(await client.push("call", retry=0)) == {}
    worker.terminate()


async def test_routing_by_jobtype_and_auth_from_the_file_and_the_environment(
    broker: App,
    client: AsyncClient,
    downstream: Downstream,
    nursery: trio.Nursery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_DOWNSTREAM_TOKEN", "t0ken")
    file = tmp_path / "http.toml"
    file.write_text(
        f"""
url = "tcp://127.0.0.1:{broker.port}"
queues = ["web", "default"]
timeout = 5

[default]
url = "{downstream.url}/ok"

[routes.mail]
url = "{downstream.url}/text"
auth = {{ bearer_env = "TEST_DOWNSTREAM_TOKEN" }}
headers = {{ X-Tenant = "acme" }}

[routes.render]
url = "{downstream.url}/slow"
timeout = 2
auth = {{ username = "hopper", password = "pa:ss" }}
"""
    )
    worker = HttpWorker(load(str(file)), heartbeat=0.05)
    await nursery.start(worker.arun)
    with trio.fail_after(WAIT):
        for jobtype, queue in [("mail", "web"), ("render", "default"), ("other", "web")]:
            await client.result(await client.push(jobtype, queue=queue))
    [(_, mail, body)] = downstream.seen("/text")
    assert body["jobtype"] == "mail" and body["queue"] == "web"
    assert mail["Authorization"] == "Bearer t0ken" and mail["X-Tenant"] == "acme"
    [(_, render, _)] = downstream.seen("/slow")
    assert render["Authorization"] == "Basic aG9wcGVyOnBhOnNz"  # hopper:pa:ss
    [(_, other, body)] = downstream.seen("/ok")
    assert body["jobtype"] == "other" and "Authorization" not in other
    worker.terminate()


def test_configurations_that_cannot_work_are_refused(tmp_path: Path) -> None:
    bad = {
        "unknown = 1": "unknown",
        '[default]\nurl = "ftp://x"': "not an http",
        '[routes.a]\nurl = "http://x"\nauth = { bearer_env = "NO_SUCH_VARIABLE_HERE" }': "not set",
        '[routes.a]\nurl = "http://x"\naccepted = true': "needs a \\[callback\\]",
        '[callback]\nlisten = "127.0.0.1:0"': "needs secret",
        '[routes.a]\nurl = "http://x"\nconcurrency = 0': "concurrency: must be 1 or more",
    }
    for text, error in bad.items():
        file = tmp_path / "bad.toml"
        file.write_text(text)
        with pytest.raises(ConfigError, match=error):
            load(str(file))
    assert retry_after("2") == 2.0 and retry_after("soon") is None and retry_after(None) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: at once
    future = datetime.fromtimestamp(time.time() + 120).astimezone()
    when = future.strftime("%a, %d %b %Y %H:%M:%S %z")
    assert retry_after(when) == pytest.approx(120, abs=2)


async def test_accepted_jobs_wait_for_their_callback_with_their_reservation_extended(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    callback = Callback(listen="127.0.0.1:0", secret=SECRET, extend=30)
    accepted = route(downstream, "/accept", accepted=True)
    worker = await start(nursery, broker, downstream, default=accepted, callback=callback)
    done = await client.push("render", [1], reserve_for=60)
    failed = await client.push("render", [2], reserve_for=60, retry=1)
    await eventually(lambda: len(downstream.seen("/accept")) == 2)
    urls = {body["jid"]: headers["Hopper-Callback"] for _, headers, body in downstream.requests}
    assert urls[done] == f"{worker.callback_url}/jobs/{done}"
    assert all(body["callback"] == urls[body["jid"]] for *_, body in downstream.requests)
    # Reserved for 60 s at the fetch; extended to 90 s from the 202 on.
    await eventually(lambda: reserved_for(client, done, 75))
    async with httpx.AsyncClient() as http:
        right = {"Authorization": f"Bearer {SECRET}"}
        wrong = await http.post(f"{urls[done]}/done", headers={"Authorization": "Bearer no"})
        unknown = await http.post(f"{worker.callback_url}/jobs/nobody/done", headers=right)
        assert (wrong.status_code, unknown.status_code) == (401, 404)
        answer = await http.post(f"{urls[done]}/done", json={"pages": 3}, headers=right)
        assert answer.status_code == 204
        with trio.fail_after(WAIT):
            assert await client.result(done) == {"pages": 3}
        again = await http.post(f"{urls[done]}/done", json={}, headers=right)
        assert again.status_code == 404  # settled already
        async with client.events(jids=[failed], events=["failed", "done"]) as stream:
            answer = await http.post(f"{urls[failed]}/failed", content=b"disk full", headers=right)
            assert answer.status_code == 204
            event = await next_event(stream, "failed", "done")
    assert event.errtype == "CallbackFailed"
    failure = (await client.state(failed)).failure
    assert failure is not None and failure.message == "disk full"
    worker.terminate()


async def reserved_for(client: AsyncClient, jid: str, seconds: float) -> bool:
    """Whether the job is reserved for more than `seconds` from now."""
    until = (await client.state(jid)).reserved_until
    return bool(until) and datetime.fromisoformat(until).timestamp() > time.time() + seconds


async def test_no_more_requests_at_once_than_the_concurrency(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    worker = await start(
        nursery, broker, downstream, default=route(downstream, "/gate"), concurrency=2
    )
    jids = [await client.push("call", [n]) for n in range(6)]
    assert await trio.to_thread.run_sync(downstream.full.wait, WAIT)
    states = [(await client.state(jid)).state for jid in jids]
    assert states.count("working") == 2 and states.count("queued") == 4
    downstream.release.set()
    with trio.fail_after(WAIT):
        for jid in jids:
            await client.result(jid)
    assert downstream.most == 2 and len(downstream.seen("/gate")) == 6
    worker.terminate()


async def test_a_route_takes_no_more_requests_than_its_own_concurrency(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    gate = route(downstream, "/gate", concurrency=2)
    worker = await start(nursery, broker, downstream, routes={"render": gate}, concurrency=8)
    held = [await client.push("render", [n]) for n in range(5)]
    assert await trio.to_thread.run_sync(downstream.full.wait, WAIT)
    others = [await client.push("call", [n]) for n in range(3)]
    with trio.fail_after(WAIT):  # the other routes go on while this one is full
        for jid in others:
            await client.result(jid)
    assert downstream.most == 2 and len(downstream.seen("/gate")) == 2
    downstream.release.set()
    with trio.fail_after(WAIT):
        for jid in held:
            await client.result(jid)
    assert downstream.most == 2 and len(downstream.seen("/gate")) == 5
    worker.terminate()


def test_the_command_refuses_a_bad_file_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hopper_client.http.cli import main

    assert main([str(tmp_path / "missing.toml")]) == 2
    file = tmp_path / "http.toml"
    file.write_text('[default]\nurl = "http://127.0.0.1:1/x"\n')
    assert main([str(file), "--url", "nonsense://x"]) == 2
    assert "hopper-http-worker" in capsys.readouterr().err


async def test_the_command_exits_1_when_refused_and_2_when_it_cannot_listen(
    start_broker: StartBroker, tmp_path: Path
) -> None:
    from hopper_client.http.cli import main

    guarded = await start_broker(password="right")
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    file = tmp_path / "http.toml"
    file.write_text('[default]\nurl = "http://127.0.0.1:1/x"\n')
    wrong = f"tcp://:wrong@127.0.0.1:{guarded.port}"
    with trio.fail_after(WAIT):
        assert await trio.to_thread.run_sync(main, [str(file), "--url", wrong]) == 1
        file.write_text(
            f'[default]\nurl = "http://x/"\naccepted = true\n'
            f'[callback]\nlisten = "127.0.0.1:{port}"\nsecret = "s"\n'
        )
        right = f"tcp://:right@127.0.0.1:{guarded.port}"
        assert await trio.to_thread.run_sync(main, [str(file), "--url", right]) == 2
    taken.close()
