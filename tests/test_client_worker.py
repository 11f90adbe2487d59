"""The Worker in-process against a real broker: jobs, failures, middleware, quiet/terminate."""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from hopper_client import AsyncClient, Client, Job, Worker, current_job
from hopper_client.execution import MAX_BACKTRACE_LINE, MAX_MESSAGE
from tests.conftest import eventually, live_jobs

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

DEFAULT = QueueKeys("default")


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


def stored(rdb: redis.Redis, jid: str) -> Job:
    payload = rdb.hget(DEFAULT.jobs, jid)
    assert payload is not None, f"{jid} is not stored"
    return msgspec.json.decode(payload, type=Job)


@pytest.fixture
async def producer(broker: App) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(url(broker)) as client:
        yield client


def make_worker(broker: App, **options: Any) -> Worker:
    options.setdefault("heartbeat", 0.05)
    return Worker(url(broker), concurrency=options.pop("concurrency", 4), **options)


async def test_sync_and_async_jobs_run_and_are_acked(
    broker: App, producer: AsyncClient, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    done: list[tuple[str, Any, str]] = []
    worker = make_worker(broker)

    @worker.job()
    def add(a: int, b: int) -> None:
        done.append(("add", a + b, current_job().jid))

    @worker.job("shout")
    async def shout(text: str) -> None:
        await trio.sleep(0)
        done.append(("shout", text.upper(), current_job().jid))

    await nursery.start(worker.arun)
    jids = [await producer.push("add", [n, n]) for n in range(20)]
    jids += [await producer.push("shout", ["héllo ✓"]) for _ in range(5)]
    await eventually(lambda: len(done) == 25)
    assert sorted(jid for *_, jid in done) == sorted(jids)
    assert {value for kind, value, _ in done if kind == "shout"} == {"HÉLLO ✓"}
    await eventually(lambda: live_jobs(rdb) == 0)
    worker.terminate()


async def test_failure_lands_in_retries_with_the_backtrace(
    broker: App, producer: AsyncClient, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    worker = make_worker(broker)

    def explode(value: int) -> None:
        raise ValueError(f"bad value {value}")

    worker.register("explode", lambda value: explode(value))
    await nursery.start(worker.arun)
    jid = await producer.push("explode", [7], retry=3)
    unknown = await producer.push("nobody-knows", [])
    await eventually(
        lambda: rdb.zscore(DEFAULT.retries, jid) and rdb.zscore(DEFAULT.retries, unknown)
    )
    failure = stored(rdb, jid).failure
    assert failure is not None
    assert (failure.errtype, failure.message, failure.remaining) == (
        "ValueError",
        "bad value 7",
        3,
    )
    assert any("in explode" in line for line in failure.backtrace)
    assert not any("trio" in line for line in failure.backtrace)  # starts at the job's code
    assert failure.backtrace[-1] == "ValueError: bad value 7"
    other = stored(rdb, unknown).failure
    assert other is not None and other.errtype == "UnknownJobtype"
    worker.terminate()


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


class Abort(BaseException):
    """A BaseException of a library (as gevent's GreenletExit)."""


@pytest.mark.parametrize("is_async", [False, True], ids=["thread", "task"])
async def test_whatever_a_job_raises_fails_that_job_alone(
    broker: App, producer: AsyncClient, rdb: redis.Redis, nursery: trio.Nursery, is_async: bool
) -> None:
    """An exception that cannot be shown, SystemExit, KeyboardInterrupt (a job's own: signals
    reach the worker's main thread) or another BaseException, a message of 17 MB: each FAILs
    its job, which is then retried, and the worker goes on."""
    raised: dict[str, BaseException] = {
        "unprintable": Unprintable(),
        "exit": SystemExit(3),
        "interrupt": KeyboardInterrupt(),
        "abort": Abort("stop"),
        "huge": ValueError("x" * 17_000_000),
    }
    worker = make_worker(broker)
    logging.getLogger("hopper_client.worker").setLevel(logging.ERROR)  # no 17 MB log lines

    async def raise_in_task(kind: str) -> None:
        raise raised[kind]

    def raise_in_thread(kind: str) -> None:
        raise raised[kind]

    worker.register("raise", raise_in_task if is_async else raise_in_thread)
    worker.register("fine", lambda: None)
    await nursery.start(worker.arun)
    jids = {kind: await producer.push("raise", [kind], retry=3) for kind in raised}
    await eventually(lambda: all(rdb.zscore(DEFAULT.retries, jid) for jid in jids.values()))
    failures = {kind: stored(rdb, jid).failure for kind, jid in jids.items()}
    assert {k: f.errtype for k, f in failures.items() if f} == {
        k: type(e).__name__ for k, e in raised.items()
    }
    assert failures["unprintable"].message == "<Unprintable that cannot be shown>"  # type: ignore[union-attr]
    assert len(failures["huge"].message) == MAX_MESSAGE  # type: ignore[union-attr]
    assert all(len(line) <= MAX_BACKTRACE_LINE for line in failures["huge"].backtrace)  # type: ignore[union-attr]
    fine = await producer.push("fine")
    assert await eventually(lambda: _done(producer, fine))
    worker.terminate()


@pytest.mark.parametrize("is_async", [False, True], ids=["thread", "task"])
async def test_a_result_the_broker_refuses_is_left_out_and_the_job_acked(
    broker: App, producer: AsyncClient, rdb: redis.Redis, nursery: trio.Nursery, is_async: bool
) -> None:
    worker = make_worker(broker)

    async def big_in_task() -> str:
        return "x" * 100_000  # above max_result_bytes (64 KiB)

    worker.register("big", big_in_task if is_async else lambda: "x" * 100_000)
    await nursery.start(worker.arun)
    jid = await producer.push("big")
    assert await eventually(lambda: _done(producer, jid))
    worker.terminate()


async def _done(client: AsyncClient, jid: str) -> bool:
    return (await client.state(jid)).state == "done"


async def test_middleware_wraps_every_job_in_order(
    broker: App, producer: AsyncClient, nursery: trio.Nursery
) -> None:
    seen: list[str] = []
    finished = trio.Event()
    worker = make_worker(broker, concurrency=1)

    @worker.use
    async def outer(job: Job, call_next: Any) -> None:
        seen.append(f"outer>{job.jobtype}")
        await call_next()
        seen.append("outer<")

    @worker.use
    async def inner(job: Job, call_next: Any) -> None:
        seen.append("inner>")
        try:
            await call_next()
        finally:
            seen.append("inner<")
            if job.args == ["last"]:
                finished.set()

    worker.register("step", lambda name: seen.append(name))
    await nursery.start(worker.arun)
    await producer.push("step", ["first"])
    await producer.push("step", ["last"])
    await finished.wait()
    assert seen[:6] == ["outer>step", "inner>", "first", "inner<", "outer<", "outer>step"]
    worker.terminate()


async def test_broker_quiet_then_terminate_through_beat(
    broker: App, producer: AsyncClient, rdb: redis.Redis
) -> None:
    worker = make_worker(broker)
    worker.register("work", lambda: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.arun)
        async with AsyncClient(url(broker), wid=worker.wid) as admin:
            assert await admin.beat(current_state="quiet") == "quiet"
            await eventually(lambda: worker.state == "quiet" and worker.active_slots == 0)
            jid = await producer.push("work")
            assert await admin.beat(current_state="terminate") == "terminate"
    # run() returned: the worker obeyed terminate, and it fetched nothing while quiet
    assert worker.state == "terminate"
    assert rdb.lrange(DEFAULT.queue, 0, -1) == [jid]


async def test_terminate_waits_for_running_jobs_then_fails_the_rest(
    broker: App, producer: AsyncClient, rdb: redis.Redis
) -> None:
    started: list[str] = []
    release = threading.Event()
    worker = make_worker(broker, grace=0.5)

    @worker.job()
    def quick() -> None:
        started.append("quick")

    @worker.job()
    def stuck_thread() -> None:
        started.append("thread")
        release.wait(30)

    @worker.job()
    async def stuck_task() -> None:
        started.append("task")
        await trio.sleep_forever()

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.arun)
            thread_jid = await producer.push("stuck_thread")
            task_jid = await producer.push("stuck_task")
            await eventually(lambda: {"thread", "task"} <= set(started))
            quick_jid = await producer.push("quick")
            await eventually(lambda: "quick" in started)
            worker.terminate()
    finally:
        release.set()
    assert rdb.zscore(DEFAULT.finished, quick_jid) is not None  # done
    for jid in (thread_jid, task_jid):
        assert rdb.zscore(DEFAULT.retries, jid) is not None
        failure = stored(rdb, jid).failure
        assert failure is not None and failure.errtype == "Interrupted"


async def test_sync_client_can_beat_as_the_worker(broker: App, nursery: trio.Nursery) -> None:
    worker = make_worker(broker)
    await nursery.start(worker.arun)

    def beat() -> str:
        with Client(url(broker), wid=worker.wid) as admin:
            return admin.beat()

    assert await trio.to_thread.run_sync(beat) == "running"
    worker.terminate()


async def test_asyncio_job_functions_run_on_an_asyncio_loop(
    broker: App, producer: AsyncClient, nursery: trio.Nursery
) -> None:
    loops: list[str] = []
    worker = make_worker(broker, async_backend="asyncio")

    @worker.job()
    async def on_asyncio(tag: str) -> None:
        await asyncio.sleep(0)
        loops.append(f"{tag}:{type(asyncio.get_running_loop()).__name__}")
        async with AsyncClient(url(broker)) as inner:  # push from inside an asyncio job
            await inner.push("sync_job", [tag])

    worker.register("sync_job", lambda tag: loops.append(f"{tag}:thread"))
    await nursery.start(worker.arun)
    await producer.push("on_asyncio", ["a"])
    await eventually(lambda: len(loops) == 2)
    assert loops[0].startswith("a:") and "EventLoop" in loops[0] and loops[1] == "a:thread"
    worker.terminate()


async def test_each_job_is_logged_with_its_fields(
    broker: App, producer: AsyncClient, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hopper_client.worker")
    worker = make_worker(broker)
    worker.register("ok", lambda: None)
    worker.register("bad", lambda: 1 / 0)
    await nursery.start(worker.arun)
    good, bad = await producer.push("ok"), await producer.push("bad")

    def outcomes() -> dict[str, str]:
        records = [r for r in caplog.records if hasattr(r, "outcome")]
        return {r.jid: r.outcome for r in records}  # type: ignore[attr-defined]

    await eventually(lambda: len(outcomes()) == 2)
    assert outcomes() == {good: "done", bad: "failed"}
    record = next(r for r in caplog.records if getattr(r, "jid", None) == bad)
    assert record.jobtype == "bad" and record.duration >= 0  # type: ignore[attr-defined]
    assert "ZeroDivisionError" in record.getMessage()
    worker.terminate()


async def test_worker_beats_and_registers_again_when_the_broker_forgot_it(
    broker: App, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    worker = make_worker(broker)
    await nursery.start(worker.arun)
    connected = lambda: rdb.hget(keys.worker(worker.wid), "connections") == "3"  # noqa: E731
    await eventually(connected)  # the heartbeat's, the fetcher's and the reporter's
    assert int(rdb.hget(keys.worker(worker.wid), "rss_kb") or 0) > 1000  # beats carry memory
    rdb.delete(keys.worker(worker.wid))
    rdb.zrem(keys.WORKERS, worker.wid)  # as the broker's reaper does with a silent worker
    await eventually(lambda: rdb.zscore(keys.WORKERS, worker.wid) is not None, timeout=5)
    assert worker.state == "running"
    worker.terminate()
