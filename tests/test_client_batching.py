"""The worker's batching against a real broker: slots filled with pipelined FETCHes, reports
carried or batched, sync jobs on the thread pool, every job run and ACKed once."""

import contextvars
import threading
from typing import Any

import msgspec
import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.keys import QueueKeys
from hopper_client import AsyncClient, Job, Worker, current_job, make_job
from tests.conftest import StartBroker, eventually, live_jobs

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

DEFAULT = QueueKeys("default")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def push_many(broker: App, jobtype: str, count: int) -> set[str]:
    async with AsyncClient(url(broker)) as producer:
        jobs = [make_job(jobtype, [n]) for n in range(count)]
        assert await producer.push_bulk(jobs) == {}
    return {job.jid for job in jobs}


@pytest.mark.parametrize("concurrency", [1, 7, 50])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_every_job_runs_once_and_is_acked(
    broker: App, rdb: redis.Redis, nursery: trio.Nursery, concurrency: int, kind: str
) -> None:
    ran: list[str] = []
    worker = Worker(url(broker), concurrency=concurrency, heartbeat=0.05)

    def note(n: int) -> None:
        ran.append(current_job().jid)

    async def anote(n: int) -> None:
        note(n)

    worker.register("note", note if kind == "sync" else anote)
    await nursery.start(worker.arun)
    jids = await push_many(broker, "note", 600)
    await eventually(lambda: len(ran) >= 600 and live_jobs(rdb) == 0)
    assert sorted(ran) == sorted(jids)
    assert rdb.zcard(DEFAULT.working) == 0 and rdb.zcard(DEFAULT.retries) == 0
    await eventually(lambda: worker.active_slots == 1)  # idle: one FETCH waits, no more
    worker.terminate()


async def test_blocking_sync_jobs_use_every_slot_and_no_more(
    broker: App, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    barrier = threading.Barrier(4, timeout=10)  # passes only with 4 jobs running at once
    lock, running, most = threading.Lock(), [0], [0]
    worker = Worker(url(broker), concurrency=4, heartbeat=0.05)

    @worker.job()
    def meet(n: int) -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            barrier.wait()
        finally:
            with lock:
                running[0] -= 1

    await nursery.start(worker.arun)
    await push_many(broker, "meet", 12)
    await eventually(lambda: live_jobs(rdb) == 0)
    assert most[0] == 4 and rdb.zcard(DEFAULT.retries) == 0
    worker.terminate()


async def test_sync_jobs_see_their_job_and_the_middleware_context(
    broker: App, nursery: trio.Nursery
) -> None:
    seen: dict[str, tuple[str, str, str]] = {}
    worker = Worker(url(broker), concurrency=3, heartbeat=0.05)

    @worker.use
    async def tag(job: Job, call_next: Any) -> None:
        request_id.set(f"req-{job.args[0]}")
        await call_next()

    @worker.job()
    def look(n: int) -> None:
        seen[current_job().jid] = (request_id.get(), f"req-{n}", threading.current_thread().name)

    await nursery.start(worker.arun)
    await push_many(broker, "look", 30)
    await eventually(lambda: len(seen) == 30)
    assert all(got == wanted for got, wanted, _ in seen.values())
    assert {thread for *_, thread in seen.values()} <= {"hopper-job"}
    worker.terminate()


async def test_reports_of_jobs_ending_while_a_fetch_waits_are_not_held_back(
    start_broker: StartBroker, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    broker = await start_broker(fetch_timeout=30)
    release = trio.Event()
    worker = Worker(url(broker), concurrency=2, heartbeat=0.05, grace=0.1)

    @worker.job()
    async def hold(n: int) -> None:
        await release.wait()

    await nursery.start(worker.arun)
    (jid,) = await push_many(broker, "hold", 1)
    await eventually(lambda: worker.active_slots == 2)  # the job, and a FETCH that waits
    release.set()  # its ACK goes out while that FETCH still waits
    await eventually(lambda: rdb.zscore(DEFAULT.finished, jid) is not None, timeout=5)
    worker.terminate()


async def test_short_jobs_are_fetched_ahead_up_to_prefetch(
    broker: App, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    reserved: list[int] = []  # jobs reserved at the broker, seen from inside each job
    taken: list[int] = []  # jobs and FETCHes the worker holds
    worker = Worker(url(broker), concurrency=1, prefetch=2, heartbeat=0.05)

    @worker.job()
    async def look(n: int) -> None:
        reserved.append(rdb.zcard(DEFAULT.working))
        taken.append(worker.active_slots)

    await nursery.start(worker.arun)
    await push_many(broker, "look", 40)
    await eventually(lambda: live_jobs(rdb) == 0)
    assert len(reserved) == 40
    assert max(reserved) >= 3  # the running job and 2 fetched ahead (+ ACKs on their way)
    assert max(taken) == 3  # never more
    worker.terminate()


async def test_slow_jobs_are_not_fetched_ahead(
    broker: App, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    release = trio.Event()
    ran_by: dict[str, str] = {}
    first, second = (Worker(url(broker), concurrency=1, heartbeat=0.05) for _ in range(2))
    for worker in (first, second):

        async def hold(n: int, worker: Worker = worker) -> None:
            ran_by[current_job().jid] = worker.wid
            await release.wait()

        worker.register("hold", hold)
    await nursery.start(first.arun)
    (held,) = await push_many(broker, "hold", 1)
    await eventually(lambda: held in ran_by)
    (waiting,) = await push_many(broker, "hold", 1)
    await nursery.start(second.arun)
    await eventually(lambda: waiting in ran_by)  # the first worker did not take it ahead
    assert ran_by == {held: first.wid, waiting: second.wid}
    release.set()
    await eventually(lambda: live_jobs(rdb) == 0)
    first.terminate()
    second.terminate()


async def test_terminate_fails_jobs_fetched_ahead_that_never_started(
    broker: App, rdb: redis.Redis
) -> None:
    worker = Worker(url(broker), concurrency=1, prefetch=1, heartbeat=0.05, grace=0.1)
    quick_done: list[int] = []

    @worker.job()
    def quick(n: int) -> None:
        quick_done.append(n)

    @worker.job()
    async def stuck(n: int) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(worker.arun)
        await push_many(broker, "quick", 3)  # short jobs: the worker fetches ahead
        await eventually(lambda: len(quick_done) == 3)
        (stuck_jid,) = await push_many(broker, "stuck", 1)
        after = await push_many(broker, "quick", 2)
        await eventually(lambda: rdb.zcard(DEFAULT.working) == 2)  # stuck + one fetched ahead
        worker.terminate()
    (ahead_jid,) = set(rdb.zrange(DEFAULT.retries, 0, -1)) - {stuck_jid}
    assert ahead_jid in after
    for jid in (stuck_jid, ahead_jid):
        payload = rdb.hget(DEFAULT.jobs, jid)
        assert payload is not None
        failure = msgspec.json.decode(payload, type=Job).failure
        assert failure is not None and failure.errtype == "Interrupted"
    assert rdb.lrange(DEFAULT.queue, 0, -1) == list(after - {ahead_jid})  # never fetched
    assert rdb.zcard(DEFAULT.working) == 0 and len(quick_done) == 3
