"""Job control over the wire: JOB CANCEL in every place, JOB SNOOZE, BEAT with the jids a worker
runs, lost workers (silent for worker_ttl) and the per-job deadline's validation."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from hopper_broker.app import App
from tests.conftest import BrokerProcess, StartBroker, check_store, eventually
from tests.wire import SyncWire, Wire, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def state(w: Wire, jid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"STATE {jid}"))
    return found


async def cancel(w: Wire, jid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"CANCEL {jid}"))
    return found


async def test_cancel_a_job_that_waits_is_scheduled_or_retries(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    waiter = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("queued-01"))
    await w.call("PUSH", job("queued-02"))
    await w.call("PUSH", job("later-001", at="2099-01-01T00:00:00Z"))
    await w.call("PUSH", job("failing-1"))

    async with trio.open_nursery() as nursery:
        answers: list[dict[str, Any]] = []

        async def wait() -> None:
            answers.append(json.loads(await waiter.call("JOB", "WAIT queued-01 10")))

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        cancelled = await cancel(w, "queued-01")
        assert cancelled["state"] == "cancelled" and cancelled["finished_at"]
    assert answers[0]["state"] == "cancelled"
    assert (await cancel(w, "later-001"))["state"] == "cancelled"

    fetched = json.loads(await w.call("FETCH", "default"))
    assert fetched["jid"] == "queued-02"  # queued-01 is gone from the queue
    await w.call("ACK", {"jid": "queued-02"})
    fetched = json.loads(await w.call("FETCH", "default"))
    await w.call("FAIL", {"jid": fetched["jid"], "message": "boom"})
    assert (await state(w, "failing-1"))["state"] == "retrying"
    assert (await cancel(w, "failing-1"))["state"] == "cancelled"

    assert (await cancel(w, "queued-02"))["state"] == "done"  # over: left as it is
    assert await cancel(w, "nope-nope") == {"jid": "nope-nope", "state": "unknown"}
    assert await w.call("FETCH", "default") is None
    check_store(store_url)


async def test_cancel_a_running_job_reaches_its_worker_and_it_is_never_retried(
    broker: App, store_url: str
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    for jid in ("running-1", "running-2", "running-3"):
        await w.call("PUSH", job(jid))
        await w.call("FETCH", "default")

    asked = await cancel(w, "running-1")
    assert asked["state"] == "working" and asked["cancel_requested"] is True
    assert asked["wid"] == "w1"
    await cancel(w, "running-2")
    beat = {"wid": "w1", "jids": ["running-1", "running-2", "running-3", "unknown-1"]}
    reply = json.loads(await w.call("BEAT", beat))
    assert reply == {"state": "running", "drop": ["running-1", "running-2", "unknown-1"]}

    # whatever the worker reports next: a failure ends it cancelled, an ACK done (it ran)
    await w.call("FAIL", {"jid": "running-1", "errtype": "Cancelled", "message": "stopped"})
    cancelled = await state(w, "running-1")
    assert cancelled["state"] == "cancelled" and cancelled["failure"]["message"] == "stopped"
    await w.call("ACK", {"jid": "running-2"})
    assert (await state(w, "running-2"))["state"] == "done"
    assert "cancel_requested" not in await state(w, "running-3")
    info = json.loads(await w.call("INFO"))
    assert info["faktory"]["total_failures"] == 1
    check_store(store_url)


async def test_a_plain_beat_keeps_its_reply(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    assert await w.call("BEAT", {"wid": "w1"}) == b"OK"
    assert json.loads(await w.call("BEAT", {"wid": "w1", "jids": []})) == {
        "state": "running",
        "drop": [],
    }
    assert json.loads(await w.call("BEAT", {"wid": "w1", "current_state": "quiet"})) == {
        "state": "quiet"
    }


async def test_beat_tells_a_worker_of_jobs_it_no_longer_holds(start_broker: StartBroker) -> None:
    app = await start_broker(min_reservation=1, reaper_interval=0.05)
    w1 = await Wire.open(app.port, hello={"wid": "w1"})
    w2 = await Wire.open(app.port, hello={"wid": "w2"})
    await w1.call("PUSH", job("short-res", reserve_for=1))
    await w1.call("FETCH", "default")
    assert json.loads(await w1.call("BEAT", {"wid": "w1", "jids": ["short-res"]}))["drop"] == []

    async def retrying() -> bool:
        return (await state(w1, "short-res"))["state"] == "retrying"

    await eventually(retrying)
    assert json.loads(await w1.call("BEAT", {"wid": "w1", "jids": ["short-res"]}))["drop"] == [
        "short-res"
    ]
    # given to another worker: still not w1's
    await w1.call(
        "MUTATE", {"cmd": "requeue", "target": "retries", "filter": {"jids": ["short-res"]}}
    )
    assert json.loads(await w2.call("FETCH", "default"))["jid"] == "short-res"
    assert json.loads(await w1.call("BEAT", {"wid": "w1", "jids": ["short-res"]}))["drop"] == [
        "short-res"
    ]
    assert json.loads(await w2.call("BEAT", {"wid": "w2", "jids": ["short-res"]}))["drop"] == []


async def test_a_cancel_racing_an_ack_ends_in_one_final_state(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    canceller = await Wire.open(broker.port, hello={})
    jids = [f"race-{i:04d}" for i in range(200)]
    for jid in jids:
        await w.call("PUSH", job(jid))
    for _ in jids:
        await w.call("FETCH", "default")

    async def ack_all() -> None:
        for jid in jids:
            await w.call("ACK", {"jid": jid})

    async def cancel_all() -> None:
        for jid in reversed(jids):
            await cancel(canceller, jid)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ack_all)
        nursery.start_soon(cancel_all)
    states = {(await state(w, jid))["state"] for jid in jids}
    assert states == {"done"}  # every job was reserved: an ACK ends it done, cancel or not
    check_store(store_url)

    # a cancel that wins against a FAIL: never retried
    for jid in jids[:50]:
        await w.call("PUSH", job(f"{jid}-f"))
        await w.call("FETCH", "default")

    async def fail_all() -> None:
        for jid in jids[:50]:
            await w.call("FAIL", {"jid": f"{jid}-f", "message": "x"})

    async def cancel_some() -> None:
        for jid in jids[:50]:
            await cancel(canceller, f"{jid}-f")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail_all)
        nursery.start_soon(cancel_some)
    for jid in jids[:50]:  # FAIL first: cancelled from retries; cancel first: FAIL ends it
        assert (await state(w, f"{jid}-f"))["state"] == "cancelled"
    check_store(store_url)


async def test_snooze_hands_a_job_back_without_using_a_retry(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("snoozer-1", retry=1))
    await w.call("FETCH", "default")
    assert await w.call("JOB", "SNOOZE snoozer-1 3600") == b"OK"
    snoozed = await state(w, "snoozer-1")
    assert snoozed["state"] == "scheduled" and "failure" not in snoozed
    info = json.loads(await w.call("INFO"))
    assert info["faktory"]["total_failures"] == 0

    await w.call("PUSH", job("snoozer-2"))
    await w.call("FETCH", "default")
    assert await w.call("JOB", "SNOOZE snoozer-2 0") == b"OK"

    async def back() -> bool:
        return (await state(w, "snoozer-2"))["state"] == "queued"

    await eventually(back)
    await w.call("FETCH", "default")
    await cancel(w, "snoozer-2")
    assert await w.call("JOB", "SNOOZE snoozer-2 10") == b"OK"
    assert (await state(w, "snoozer-2"))["state"] == "cancelled"
    check_store(store_url)


WORKER = textwrap.dedent(
    """
    import json, socket, sys, time
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b'HELLO {"v":2,"wid":"doomed-worker"}\\r\\n'); f.readline()
    for _ in range(3):
        s.sendall(b"FETCH default\\r\\n"); f.readline(); f.readline()
    print("fetched", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_worker_s_jobs_come_back_within_worker_ttl(
    broker_process: Callable[..., BrokerProcess], store_url: str
) -> None:
    broker = broker_process("--worker-ttl", "1", "--worker-reaper-interval", "0.2")
    w = SyncWire(broker.port, hello={})
    for i in range(3):
        w.call("PUSH", job(f"held-{i:04d}", reserve_for=600))
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(broker.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "fetched\n"
        assert json.loads(w.call("JOB", "STATE held-0000"))["wid"] == "doomed-worker"
        worker.send_signal(signal.SIGKILL)
        killed = time.monotonic()
    finally:
        worker.kill()
        worker.wait(10)
    deadline = killed + 15
    for i in range(3):
        while (found := json.loads(w.call("JOB", f"STATE held-{i:04d}")))["state"] != "retrying":
            assert time.monotonic() < deadline, found
            time.sleep(0.05)
        assert found["failure"]["errtype"] == "WorkerLost"
    back = time.monotonic() - killed
    assert back < 600  # not after reserve_for
    w.close()
    check_store(store_url)
