"""The dashboard at its edges: cursors Redis could not read, odd Basic credentials and their
delay, jids that are not plain path segments, Redis away during a filtered page, which workers
are listed, and names of other sites (DNS rebinding)."""

import re
import time

import httpx
import pytest
import trio

from hopper_broker.web.auth import LOGIN_DELAY
from tests.conftest import StartBroker
from tests.proxy import BlackholeProxy
from tests.test_dashboard import client, fill_sets
from tests.wire import Wire, job


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-jid="([^"]+)"', page)


async def _fail_into_retries(wire: Wire, jid: str) -> None:
    assert await wire.call("PUSH", job(jid, "Pay", queue="pay", retry=5)) == b"OK"
    assert await wire.call("FETCH", "pay")
    assert await wire.call("FAIL", {"jid": jid, "errtype": "E", "message": "m"}) == b"OK"


@pytest.mark.parametrize("cursor", ["nan:retry-0001", "1_0:retry-0001", "\u0661:retry-0001"])
async def test_a_cursor_redis_could_not_read_is_a_400(
    start_broker: StartBroker, cursor: str
) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    await fill_sets(wire)
    async with client(app) as http:
        assert (await http.get("/retries", params={"cursor": "nope"})).status_code == 400
        reply = await http.get("/retries", params={"cursor": cursor})
        assert reply.status_code == 400, (reply.status_code, reply.text[:200])
    await wire.aclose()


async def test_basic_credentials_not_ascii_are_a_401(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0", dashboard_password="s3cret")
    async with client(app) as http:
        assert (await http.get("/metrics", auth=("x", "wrong"))).status_code == 401
        odd = {"Authorization": "Basic \u00e9t\u00e9".encode("latin-1")}
        reply = await http.get("/metrics", headers=odd)  # type: ignore[arg-type]
        assert reply.status_code == 401, (reply.status_code, reply.text[:200])


async def test_wrong_basic_password_waits_like_the_login_form(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0", dashboard_password="s3cret")
    async with client(app) as http:
        started = time.monotonic()
        for guess in ("a", "b", "c", "d"):
            assert (await http.get("/metrics", auth=("x", guess))).status_code == 401
        took = time.monotonic() - started
        # docs/dashboard.md: "A wrong password is answered after half a second."
        assert took >= 4 * LOGIN_DELAY * 0.9, f"4 wrong guesses answered in {took:.3f} s"


async def test_the_link_of_a_jid_with_a_percent_shows_that_job(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    await _fail_into_retries(wire, "pay-%41-0001")
    await _fail_into_retries(wire, "pay-A-0001")  # what "%41" decodes to
    async with client(app) as http:
        page = (await http.get("/retries")).text
        assert sorted(_rows(page)) == ["pay-%41-0001", "pay-A-0001"]
        row = page.split('<tr data-jid="pay-%41-0001">')[1].split("</tr>")[0]
        href = re.search(r'<a href="([^"]+)"><code>pay-%41-0001</code>', row)
        assert href, row
        shown = (await http.get(href.group(1))).text
        heading = re.search(r"<h1>Job <code>([^<]*)</code>", shown)
        assert heading and heading.group(1) == "pay-%41-0001", (href.group(1), heading)
    await wire.aclose()


@pytest.mark.parametrize("jid", ["report/2024-0001", "report?2024-0001"])
async def test_jid_box_finds_a_job_whatever_its_jid(start_broker: StartBroker, jid: str) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    assert await wire.call("PUSH", job(jid, "Report")) == b"OK"
    async with client(app) as http:
        reply = await http.get("/find", params={"jid": jid}, follow_redirects=True)
        assert reply.status_code == 200, (reply.url, reply.status_code)
        assert f"<h1>Job <code>{jid}</code>" in reply.text
    await wire.aclose()


@pytest.mark.parametrize("path", ["/dead", "/history"])
async def test_a_page_by_queue_says_when_redis_does_not_answer(
    nursery: trio.Nursery, redis_url: str, path: str
) -> None:
    proxy = BlackholeProxy(redis_url.removeprefix("unix://"))
    await nursery.start(proxy.run)
    app = await StartBroker(nursery, proxy.url)(dashboard_bind="127.0.0.1:0", redis_timeout=0.5)
    async with client(app) as http:
        assert (await http.get(path, params={"queue": "mail"})).status_code == 200
        proxy.blackhole()
        reply = await http.get(path, timeout=10)  # every queue: 503, as documented
        assert reply.status_code == 503, reply.status_code
        reply = await http.get(path, params={"queue": "mail"}, timeout=10)
        assert reply.status_code == 503 and "Redis did not answer" in reply.text, (
            reply.status_code,
            reply.text[:200],
        )


async def test_the_workers_listed_are_those_that_beat_last(
    start_broker: StartBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hopper_broker import listing

    monkeypatch.setattr(listing, "INFO_WORKERS", 2)  # the bound, made small
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wires = [await Wire.open(app.port, hello={"hostname": "h", "wid": w}) for w in "abc"]
    beat = await wires[0].call("BEAT", {"wid": "a"})  # "a" beats last: "b" is the stalest
    assert beat == b"OK" or b"running" in beat, beat
    async with client(app) as http:
        page = (await http.get("/workers")).text
    shown = re.findall(r'<tr data-wid="([^"]+)"', page)
    assert sorted(shown) == ["a", "c"], shown
    for wire in wires:
        await wire.aclose()


async def test_an_open_dashboard_answers_no_other_site_name(
    start_broker: StartBroker,
) -> None:
    """A page of http://rebind.evil.example:<port>, once that name points at 127.0.0.1 (DNS
    rebinding), can neither read an open (loopback, no password) dashboard nor act on it."""
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    wire = await Wire.open(app.port, hello={"hostname": "h"})
    assert await wire.call("PUSH", job("jobid-0001", queue="q1")) == b"OK"
    port = app.dashboard_port
    evil = f"rebind.evil.example:{port}"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        for name in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert (await http.get("/queues", headers={"Host": name})).status_code == 200
        page = await http.get("/queues")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        assert (await http.get("/queues", headers={"Host": evil})).status_code == 421
        form = {"queue": "q1", "op": "clear", "csrf": csrf.group(1)}
        reply = await http.post(
            "/queues/act", data=form, headers={"Host": evil, "Origin": f"http://{evil}"}
        )
        assert reply.status_code == 421
    assert await wire.call("FETCH", "q1") is not None, "the queue was cleared"
    await wire.aclose()
