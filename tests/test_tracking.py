"""Jobs by jid over the wire: JOB STATE in every place, results carried by ACK, JOB WAIT (on
one broker and across two), JOB LOG, and Faktory Enterprise's TRACK SET / TRACK GET."""

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

from hopper_broker.app import App
from tests.conftest import BrokerProcess, StartBroker, check_store
from tests.wire import SyncWire, Wire, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


def rfc3339(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


async def state(w: Wire, jid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"STATE {jid}"))
    return found


async def test_the_state_of_a_job_in_every_place(start_broker: StartBroker) -> None:
    app = await start_broker(min_reservation=1)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    assert await state(w, "nope-nope") == {"jid": "nope-nope", "state": "unknown"}

    await w.call("PUSH", job("queued-01", args=[1]))
    queued = await state(w, "queued-01")
    assert queued["state"] == "queued" and queued["queue"] == "default"
    assert queued["jobtype"] == "work" and queued["enqueued_at"] and queued["attempts"] == 0

    await w.call("PUSH", job("later-001", at="2099-01-01T00:00:00Z"))
    assert (await state(w, "later-001"))["at"] == "2099-01-01T00:00:00Z"

    await w.call("FETCH", "default")
    working = await state(w, "queued-01")
    assert working["state"] == "working" and working["reserved_until"] and working["attempts"] == 1

    await w.call("FAIL", {"jid": "queued-01", "errtype": "Boom", "message": "no"})
    retrying = await state(w, "queued-01")
    assert retrying["state"] == "retrying" and retrying["next_at"]
    assert retrying["failure"]["errtype"] == "Boom" and retrying["attempts"] == 1

    await w.call("PUSH", job("doomed-01", retry=-1))
    await w.call("FETCH", "default")
    await w.call("FAIL", {"jid": "doomed-01", "message": "gone"})
    assert (await state(w, "doomed-01"))["state"] == "dead"

    await w.call("PUSH", job("one-shot1", retry=0))
    await w.call("FETCH", "default")
    await w.call("FAIL", {"jid": "one-shot1", "message": "once"})
    discarded = await state(w, "one-shot1")
    assert discarded["state"] == "discarded" and discarded["finished_at"]
    assert discarded["failure"]["message"] == "once"

    await w.call("PUSH", job("done-0001"))
    await w.call("FETCH", "default")
    assert await w.call("ACK", {"jid": "done-0001", "result": {"rows": [1, 2], "ok": True}})
    done = await state(w, "done-0001")
    assert done["state"] == "done" and done["result"] == {"rows": [1, 2], "ok": True}
    assert done["attempts"] == 1 and done["finished_at"] and done["created_at"]


async def test_finished_jobs_are_forgotten_after_finished_ttl(start_broker: StartBroker) -> None:
    app = await start_broker(finished_ttl=0.2, dead_purge_interval=0.05)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    await w.call("PUSH", job("short-001"))
    await w.call("FETCH", "default")
    await w.call("ACK", {"jid": "short-001", "result": 7})
    assert (await state(w, "short-001"))["result"] == 7

    async def forgotten() -> bool:
        return (await state(w, "short-001"))["state"] == "unknown"

    with trio.fail_after(10):
        while not await forgotten():
            await trio.sleep(0.05)
    assert await w.call("PUSH", job("short-001")) == b"OK"  # the jid is free again


async def test_job_wait_answers_when_the_job_is_done(start_broker: StartBroker) -> None:
    """The waiter is on one broker, the worker acknowledges through another."""
    first, second = await start_broker(), await start_broker()
    producer = await Wire.open(first.port, hello={})
    worker = await Wire.open(second.port, hello={"wid": "w1"})
    await producer.call("PUSH", job("awaited-1"))
    got: list[dict[str, Any]] = []

    async def wait() -> None:
        got.append(json.loads(await producer.call("JOB", "WAIT awaited-1 20")))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            await worker.call("FETCH", "default")
            await worker.call("ACK", {"jid": "awaited-1", "result": "hello"})
    assert got[0]["state"] == "done" and got[0]["result"] == "hello"


async def test_job_wait_answers_for_dead_and_at_its_timeout(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("waiting-1"))
    with trio.fail_after(5):
        assert json.loads(await w.call("JOB", "WAIT waiting-1 0.2"))["state"] == "queued"
    await w.call("PUSH", job("to-die-01", retry=-1))
    other = await Wire.open(broker.port, hello={"wid": "w2"})
    async with trio.open_nursery() as nursery:
        answers: list[Any] = []

        async def wait() -> None:
            answers.append(json.loads(await other.call("JOB", "WAIT to-die-01 20")))

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        await w.call("FETCH", "default")  # waiting-1
        await w.call("FETCH", "default")  # to-die-01
        await w.call("FAIL", {"jid": "to-die-01", "message": "x"})
    assert answers[0]["state"] == "dead"
    assert json.loads(await w.call("JOB", "WAIT nope-nope 5"))["state"] == "unknown"


async def test_job_log_keeps_the_last_lines(start_broker: StartBroker) -> None:
    app = await start_broker(max_log_lines=3, max_log_line=10)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    await w.call("PUSH", job("chatty-01"))
    await w.call("FETCH", "default")
    for n in range(5):
        assert await w.call("JOB", "LOG " + json.dumps({"jid": "chatty-01", "line": f"step {n} é"}))
    await w.call("JOB", "LOG " + json.dumps({"jid": "chatty-01", "line": "x" * 50}))
    await w.call("ACK", {"jid": "chatty-01"})
    log = (await state(w, "chatty-01"))["progress"]["log"]
    assert log == ["step 3 é", "step 4 é", "x" * 10]


async def test_track_set_and_get_as_faktory_enterprise(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    unknown = {"jid": "nope-nope", "state": "unknown", "updated_at": ""}
    assert json.loads(await w.call("TRACK", "GET nope-nope")) == unknown
    assert await w.call("TRACK", 'SET {"jid":"nope-nope","percent":5}') == b"OK"

    await w.call("PUSH", job("untracked", custom={"x": 1}))
    untracked = json.loads(await w.call("TRACK", "GET untracked"))
    assert untracked == {"jid": "untracked", "state": "unknown", "updated_at": ""}

    await w.call("PUSH", job("tracked-1", queue="tracked", custom={"track": 1}))
    queued = json.loads(await w.call("TRACK", "GET tracked-1"))
    assert queued["state"] == "enqueued" and queued["updated_at"] and "percent" not in queued
    await w.call("TRACK", 'SET {"jid":"tracked-1","percent":2,"desc":"Starting..."}')
    await w.call("FETCH", "tracked")
    await w.call("TRACK", 'SET {"jid":"tracked-1","percent":50,"desc":null}')  # Ruby's null
    working = json.loads(await w.call("TRACK", "GET tracked-1"))
    assert (working["state"], working["percent"], working["desc"]) == ("working", 50, "Starting...")
    await w.call("ACK", {"jid": "tracked-1"})
    done = json.loads(await w.call("TRACK", "GET tracked-1"))
    assert done["state"] == "success" and done["percent"] == 50
    assert await w.call("TRACK", 'SET {"jid":"tracked-1","percent":100,"desc":"Done"}') == b"OK"
    assert json.loads(await w.call("TRACK", "GET tracked-1"))["percent"] == 100


def test_an_extended_reservation_survives_a_broker_sigkill(
    broker_process: Callable[..., BrokerProcess], store_url: str
) -> None:
    broker = broker_process("--min-reservation", "1", "--reaper-interval", "0.05")
    w = SyncWire(broker.port, hello={"wid": "w1"})
    w.call("PUSH", job("long-run1", reserve_for=1, custom={"track": 1}))
    w.call("FETCH", "default")
    until = time.time() + 600
    extend = json.dumps({"jid": "long-run1", "reserve_until": rfc3339(until)})
    assert w.call("TRACK", f"SET {extend}") == b"OK"
    w.close()
    broker.kill()
    broker.start()
    w = SyncWire(broker.port, hello={"wid": "w1"})
    # a job reserved for 1 s after the restart shows that the reaper has run since the tracked
    # job's own reservation (1 s) ran out
    w.call("PUSH", job("probe-001", reserve_for=1))
    w.call("FETCH", "default")
    deadline = time.monotonic() + 15
    while json.loads(w.call("JOB", "STATE probe-001"))["state"] != "retrying":
        assert time.monotonic() < deadline, "the reaper never ran"
        time.sleep(0.05)
    tracked = json.loads(w.call("JOB", "STATE long-run1"))
    assert tracked["state"] == "working"
    assert json.loads(w.call("TRACK", "GET long-run1"))["state"] == "working"
    assert w.call("ACK", {"jid": "long-run1"}) == b"OK"
    w.close()
    check_store(store_url)
