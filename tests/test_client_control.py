"""The bundled client and Worker with job control (issue 12): cancel(), Snooze, deadlines
(`timeout=`), BEAT with the worker's jids and the jobs it must drop, cooperative cancellation
of sync jobs. Real broker, real Worker; no sleeps to synchronise."""

import asyncio
import math
import threading
from datetime import timedelta
from typing import Any, Literal

import msgspec
import pytest
import trio

from hopper_broker.app import App
from hopper_client import (
    AsyncClient,
    Client,
    Fatal,
    JobCancelled,
    JobFailed,
    Snooze,
    Worker,
    check_cancelled,
    commands,
    current_job,
    job_cancelled,
    make_job,
    wait_cancelled,
)
from tests.conftest import StartBroker, eventually

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

WAIT = 10.0  # seconds: the bound of every wait in these tests


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


def make_worker(broker: App, **options: Any) -> Worker:
    options.setdefault("heartbeat", 0.05)
    return Worker(url(broker), concurrency=options.pop("concurrency", 4), **options)


async def in_thread(event: threading.Event) -> bool:
    """Wait (bounded) for an event set by a job's thread."""
    return await trio.to_thread.run_sync(event.wait, WAIT)


# -- wire, no broker ------------------------------------------------------------------------


def test_timeout_is_carried_as_custom_timeout() -> None:
    assert make_job("work", timeout=2.5).custom == {"timeout": 2.5}
    custom = {"track": 1}
    job = make_job("work", custom=custom, timeout=timedelta(minutes=1))
    assert job.custom == {"track": 1, "timeout": 60.0} and custom == {"track": 1}
    assert make_job("work").custom is None
    for bad in (0, -1, math.nan, math.inf):
        with pytest.raises(ValueError):
            make_job("work", timeout=bad)
    for wrong in ("5", True):
        with pytest.raises(TypeError):
            make_job("work", timeout=wrong)  # type: ignore[arg-type]


def test_beat_replies_of_both_shapes() -> None:
    call = commands.heartbeat("w1", "", 10, ["a", "b"])
    sent = msgspec.json.decode(call.line[len(b"BEAT ") : -2])
    assert sent == {"wid": "w1", "current_state": "", "rss_kb": 10, "jids": ["a", "b"]}
    assert call.parse(b"OK", False) == ("running", [])
    assert call.parse(b'{"state":"quiet"}', False) == ("quiet", [])
    assert call.parse(b'{"state":"running","drop":["b"]}', False) == ("running", ["b"])
    assert call.parse(b'{"state":"terminate","drop":[]}', False) == ("terminate", [])
    plain = commands.beat("w1")  # Client.beat: the new shape reads as well
    assert plain.parse(b'{"state":"running","drop":[]}', False) == "running"
    assert plain.parse(b'{"state":"quiet"}', False) == "quiet"


def test_snooze_takes_seconds_or_a_timedelta() -> None:
    assert Snooze(1.5).seconds == 1.5 and Snooze(timedelta(minutes=2)).seconds == 120
    for bad in (-1, math.nan, math.inf, 366 * 86_400):
        with pytest.raises(ValueError):
            Snooze(bad)
    assert commands.snooze("j1", 1234567.25).line == b"JOB SNOOZE j1 1234567.25\r\n"
    assert not job_cancelled() and not wait_cancelled(0)  # outside a job
    check_cancelled()


# -- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_waiting_job(broker: App) -> None:
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("nobody-runs-this", queue="idle")
        later = await client.push("nobody-runs-this", queue="idle", at=timedelta(hours=1))
        state = await client.cancel(jid)
        assert (state.jid, state.state) == (jid, "cancelled")
        assert (await client.cancel(later)).state == "cancelled"
        assert await client.fetch("idle") is None  # never handed out
        with trio.fail_after(WAIT), pytest.raises(JobFailed, match="cancelled") as failed:
            await client.result(jid)
        assert failed.value.state.state == "cancelled"
        assert (await client.cancel("no-such-job")).state == "unknown"
        done = await client.push("quick", queue="manual")
        fetched = await client.fetch("manual")
        assert fetched is not None and fetched.jid == done
        await client.ack(done)
        assert (await client.cancel(done)).state == "done"  # a finished job stays as it was

    def sync_client() -> None:
        with Client(url(broker)) as client:
            jid = client.push("nobody-runs-this", queue="idle")
            assert client.cancel(jid).state == "cancelled"
            with pytest.raises(JobFailed):
                client.result(jid, timeout=WAIT)

    with trio.fail_after(WAIT):
        await trio.to_thread.run_sync(sync_client)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
async def test_cancel_a_running_async_job(
    broker: App, nursery: trio.Nursery, backend: Literal["trio", "asyncio"]
) -> None:
    started = threading.Event()
    stopped: list[bool] = []
    worker = make_worker(broker, async_backend=backend)

    @worker.job()
    async def forever() -> None:
        started.set()
        try:
            if backend == "trio":
                await trio.sleep_forever()
            else:
                await asyncio.sleep(3600)
        finally:
            stopped.append(job_cancelled())

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("forever", retry=5)
        assert await in_thread(started)
        state = await client.cancel(jid)
        assert (state.state, state.cancel_requested) == ("working", True)
        with trio.fail_after(WAIT), pytest.raises(JobFailed, match="cancelled"):
            await client.result(jid)
        state = await client.state(jid)
        assert state.attempts == 1  # not retried
        # The worker FAILed it at once (it still held it), rather than leave it reserved.
        assert state.failure is not None and state.failure.errtype == "JobCancelled"
        await eventually(lambda: stopped == [True])
    worker.terminate()


async def test_cancel_a_running_sync_job_cooperatively(broker: App, nursery: trio.Nursery) -> None:
    started = {name: threading.Event() for name in ("polite", "stubborn")}
    release = threading.Event()
    worker = make_worker(broker)

    @worker.job()
    def polite() -> None:
        started["polite"].set()
        wait_cancelled(WAIT)  # a sync job's checkpoint: sleeps until stopped (bounded)
        check_cancelled()  # raises JobCancelled
        raise AssertionError("not cancelled")

    @worker.job()
    def stubborn() -> int:
        started["stubborn"].set()
        release.wait(WAIT)
        assert wait_cancelled(WAIT)  # told (the notice may come after the release)
        return 7  # finishes anyway: ACKed, the job is done

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jids = {name: await client.push(name, retry=5) for name in started}
        for event in started.values():
            assert await in_thread(event)
        for jid in jids.values():
            assert (await client.cancel(jid)).cancel_requested
        with trio.fail_after(WAIT), pytest.raises(JobFailed, match="cancelled"):
            await client.result(jids["polite"])
        assert (await client.state(jids["stubborn"])).state == "working"  # runs on
        release.set()
        with trio.fail_after(WAIT):
            assert await client.result(jids["stubborn"]) == 7
    worker.terminate()


async def test_cancel_a_job_fetched_ahead_before_it_runs(
    broker: App, nursery: trio.Nursery
) -> None:
    started, release = trio.Event(), trio.Event()
    ran: list[str] = []
    worker = make_worker(broker, concurrency=1, prefetch=1)

    @worker.job()
    async def quick() -> None:
        pass

    @worker.job()
    async def victim() -> None:
        ran.append("victim")

    @worker.job()
    async def blocker() -> None:
        started.set()
        await release.wait()

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        with trio.fail_after(WAIT):  # short jobs: the worker fetches one ahead of its slot
            for _ in range(5):
                await client.result(await client.push("quick"))
        blocking = await client.push("blocker")
        await started.wait()
        victim = await client.push("victim")

        async def fetched_ahead() -> bool:  # reserved by the worker while its slot is busy
            return (await client.state(victim)).state == "working"

        await eventually(fetched_ahead)
        state = await client.cancel(victim)
        assert (state.state, state.cancel_requested) == ("working", True)
        with trio.fail_after(WAIT), pytest.raises(JobFailed, match="cancelled"):
            await client.result(victim)
        release.set()
        with trio.fail_after(WAIT):
            await client.result(blocking)
        assert ran == []
    worker.terminate()


# -- snooze ---------------------------------------------------------------------------------


async def test_snooze_runs_the_job_again_later_without_a_failure(
    broker: App, nursery: trio.Nursery
) -> None:
    runs: list[str] = []
    worker = make_worker(broker)

    @worker.job()
    def sleepy() -> str:
        runs.append(current_job().jid)
        if len(runs) == 1:
            raise Snooze(0.2)
        return "rested"

    @worker.job()
    async def asleep() -> str:
        runs.append("async")
        if runs.count("async") == 1:
            raise Snooze(timedelta(seconds=0))
        return "awake"

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("sleepy", retry=0)  # a failure would discard it
        with trio.fail_after(WAIT):
            assert await client.result(jid) == "rested"
        state = await client.state(jid)
        assert state.failure is None and state.state == "done" and runs == [jid, jid]
        with trio.fail_after(WAIT):
            assert await client.result(await client.push("asleep", retry=0)) == "awake"
    worker.terminate()


async def test_snoozing_a_job_whose_cancel_was_requested_ends_it_cancelled(
    broker: App, nursery: trio.Nursery
) -> None:
    started, release = threading.Event(), threading.Event()
    worker = make_worker(broker, heartbeat=30)  # the worker does not hear of the cancel

    @worker.job()
    def later() -> None:
        started.set()
        release.wait(WAIT)
        raise Snooze(60)

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("later")
        assert await in_thread(started)
        assert (await client.cancel(jid)).cancel_requested
        release.set()
        with trio.fail_after(WAIT), pytest.raises(JobFailed, match="cancelled"):
            await client.result(jid)
    worker.terminate()


# -- fatal failures and the catch-all function ---------------------------------------------


async def test_fatal_sends_the_job_to_the_dead_set_and_star_catches_any_jobtype(
    broker: App, nursery: trio.Nursery
) -> None:
    worker = make_worker(broker)

    @worker.job("*")
    async def anything(*args: Any) -> str:
        if current_job().jobtype == "hopeless":
            raise Fatal("no point retrying")
        return f"{current_job().jobtype}{args}"

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        with trio.fail_after(WAIT):
            assert await client.result(await client.push("whatever", [1])) == "whatever(1,)"
            jid = await client.push("hopeless", retry=5)
            with pytest.raises(JobFailed, match="dead: Fatal: no point retrying"):
                await client.result(jid)
        state = await client.state(jid)
        assert state.failure is not None and state.failure.remaining == 5
    worker.terminate()


# -- deadlines ------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
async def test_deadline_fails_an_async_job(
    broker: App, nursery: trio.Nursery, backend: Literal["trio", "asyncio"]
) -> None:
    worker = make_worker(broker, async_backend=backend)

    @worker.job()
    async def slow() -> None:
        if backend == "trio":
            await trio.sleep_forever()
        await asyncio.sleep(3600)

    @worker.job()
    async def fast() -> str:
        return "in time"

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("slow", retry=0, timeout=0.2)
        with trio.fail_after(WAIT), pytest.raises(JobFailed) as failed:
            await client.result(jid)
        failure = failed.value.state.failure
        assert failure is not None and failure.errtype == "DeadlineExceeded"
        assert "timeout of 0.2 s" in failure.message
        with trio.fail_after(WAIT):
            assert await client.result(await client.push("fast", timeout=5)) == "in time"
    worker.terminate()


async def test_deadline_fails_a_sync_job_and_ignores_its_late_result(
    broker: App, nursery: trio.Nursery
) -> None:
    saw_cancel, release = threading.Event(), threading.Event()
    worker = make_worker(broker, concurrency=1)

    @worker.job()
    def overdue() -> str:
        if wait_cancelled(WAIT):  # the thread is not killed: it is told, and may stop
            saw_cancel.set()
        release.wait(WAIT)  # ... or go on: it no longer holds the worker's slot
        return "too late"

    @worker.job()
    def next_one() -> str:
        return "ran"

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("overdue", retry=0, timeout=0.2)
        with trio.fail_after(WAIT), pytest.raises(JobFailed) as failed:
            await client.result(jid)
        failure = failed.value.state.failure
        assert failure is not None and failure.errtype == "DeadlineExceeded"
        assert await in_thread(saw_cancel)
        with trio.fail_after(WAIT):  # the one slot is free, a new thread runs the next job
            assert await client.result(await client.push("next_one")) == "ran"
        release.set()
        state = await client.state(jid)
        assert state.state == "discarded" and not state.result  # the late result is ignored
    worker.terminate()


# -- BEAT: the jobs a worker holds ----------------------------------------------------------


@pytest.mark.parametrize("sync", [False, True])
async def test_beat_drops_a_job_whose_reservation_was_taken_away(
    start_broker: StartBroker, nursery: trio.Nursery, sync: bool
) -> None:
    broker = await start_broker(min_reservation=1)
    started = threading.Event()
    ended: list[str] = []
    worker = make_worker(broker)

    async def overstays_async() -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            ended.append("cancelled")

    def overstays_sync() -> None:
        started.set()
        if wait_cancelled(WAIT):
            ended.append("cancelled")
            raise JobCancelled("told to stop")

    worker.register("overstays", overstays_sync if sync else overstays_async)
    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("overstays", reserve_for=1, retry=3)
        assert await in_thread(started)
        # The reaper expires the reservation, then the worker's next BEAT drops the job.
        await eventually(lambda: ended == ["cancelled"], timeout=WAIT)
        state = await client.state(jid)
        assert state.failure is not None
        # The worker sent nothing of its own: the only failure is the expiry's.
        assert state.failure.errtype == "ReservationExpired" and state.failure.retry_count == 0
    worker.terminate()


async def test_a_worker_beats_while_a_long_job_runs(
    start_broker: StartBroker, nursery: trio.Nursery
) -> None:
    broker = await start_broker(worker_ttl=1.0)
    worker = make_worker(broker, heartbeat=0.1)
    started, release = threading.Event(), threading.Event()

    @worker.job()
    def long() -> str:
        started.set()
        release.wait(WAIT)
        return "finished"

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("long", retry=0)
        assert await in_thread(started)
        await trio.sleep(3.0)  # three worker_ttl: a worker that did not beat would be lost
        assert (await client.state(jid)).state == "working"
        release.set()
        with trio.fail_after(WAIT):
            assert await client.result(jid) == "finished"
    worker.terminate()
