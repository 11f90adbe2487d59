"""`hopper-worker --processes N`: a supervisor and its worker processes, all real processes,
against a real broker: CPU-bound jobs on several cores, a child SIGKILLed, signals, errors."""

import bisect
import functools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hopper_broker.app import App
from hopper_broker.store import keys
from hopper_client import AsyncClient
from tests.conftest import StartBroker, eventually, live_jids
from tests.supervised import Supervised, Supervisors, alive, stored, url, workers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("store_mode"),
    pytest.mark.on_cluster,
]
WINDOW = 0.005  # seconds: the stretches in which the burns' CPU time is compared with wall time
AGAIN_AT_ONCE = {"backoff": {"kind": "fixed", "delay": 0}}  # a failed job is retried at once


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Supervisors]:
    with Supervisors(tmp_path) as started:
        yield started


@pytest.fixture
async def lively(start_broker: StartBroker) -> App:
    """A broker that fails a vanished worker's jobs back one second after its last beat."""
    return await start_broker(worker_ttl=1.0)


async def test_cpu_bound_jobs_run_four_at_a_time_on_more_than_one_core(
    lively: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to spread over")
    supervisor = supervisors.start("jobs", "--url", url(lively), "--processes", "4")
    await eventually(lambda: len(workers(rdb)) == 4, timeout=30)
    pids = set(workers(rdb).values())
    assert len(pids) == 4 and supervisor.process.pid not in pids  # four children, each a wid
    # In a stretch of WINDOW seconds, the burns must have spent more CPU time (summed over
    # the children) than wall time: more than one core at work. The machine is shared, other
    # work may take cores away for a while: up to five rounds of four burns.
    best = 0.0
    async with AsyncClient(url(lively)) as producer:
        for round in range(5):
            jids = [await producer.push("burn", [round, 4, 1.0]) for _ in range(4)]
            burns = await eventually(functools.partial(_finished, supervisor, jids), timeout=60)
            assert {burn["pid"] for burn in burns} == pids  # one burn in each child
            runs = [burn["samples"] for burn in burns]
            began, ended = max(run[0][0] for run in runs), min(run[-1][0] for run in runs)
            assert began < ended  # the four burnt at the same time
            best = max(best, _cores_at_best(runs))
            if best > 1.0:
                break
    assert best > 1.0
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()


def _cores_at_best(runs: list[list[list[float]]]) -> float:
    """The most CPU seconds per second that the runs' (wall, thread CPU) samples prove were
    spent in any WINDOW: a lower bound, CPU time counted from a sample at or after the
    window's start to one at or before its end. Above 1, two threads of two processes ran at
    the same moment: on two cores."""
    walls = [[wall for wall, _ in run] for run in runs]
    start, end = min(run[0][0] for run in runs), max(run[-1][0] for run in runs)
    best = 0.0
    for step in range(int((end - start - WINDOW) / (WINDOW / 5)) + 1):
        low = start + step * WINDOW / 5
        spent = 0.0
        for run, times in zip(runs, walls, strict=True):
            first = bisect.bisect_left(times, low)
            last = bisect.bisect_right(times, low + WINDOW) - 1
            if first < last:
                spent += run[last][1] - run[first][1]
        best = max(best, spent / WINDOW)
    return best


def _finished(supervisor: Supervised, jids: list[str]) -> list[dict[str, Any]]:
    """The finish marks of the jobs, once all are there."""
    marks = [supervisor.mark(jid, "finished") for jid in jids]
    return [mark for mark in marks if mark] if all(marks) else []


async def test_a_child_killed_is_replaced_and_its_job_comes_back(
    lively: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    supervisor = supervisors.start("jobs", "--url", url(lively), "--processes", "4")
    await eventually(lambda: len(workers(rdb)) == 4, timeout=30)
    before = workers(rdb)
    async with AsyncClient(url(lively)) as producer:
        jid = await producer.push("nap", [1.0], custom=AGAIN_AT_ONCE)
        first = await eventually(lambda: supervisor.mark(jid, "started"), timeout=20)
        os.kill(int(first["pid"]), signal.SIGKILL)
        # the broker fails the job back (WorkerLost), another child runs it to the end
        assert await producer.result(jid, timeout=30) is None
        state = await producer.state(jid)
    assert state.state == "done" and state.attempts == 2
    assert state.failure is not None and state.failure.errtype == "WorkerLost"
    finished = supervisor.mark(jid, "finished")
    assert finished is not None and finished["pid"] != first["pid"]
    # a new child took the dead one's place: four workers, one of them new
    after = await eventually(
        lambda: len(found := workers(rdb)) == 4 and set(found) != set(before) and found,
        timeout=30,
    )
    assert len(set(after) - set(before)) == 1 and int(first["pid"]) not in after.values()
    assert not supervisor.exited()
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
async def test_a_stop_gives_every_child_its_grace_once_then_all_exit(
    broker: App, supervisors: Supervisors, rdb: redis.Redis, how: str
) -> None:
    supervisor = supervisors.start("jobs", "--url", url(broker), "--processes", "4", "--grace", "3")
    await eventually(lambda: len(workers(rdb)) == 4, timeout=30)
    pids = set(workers(rdb).values())
    async with AsyncClient(url(broker)) as producer:
        short = [await producer.push("nap", [1]) for _ in range(2)]
        long = [await producer.push("nap", [60]) for _ in range(2)]
    await eventually(lambda: all(supervisor.mark(jid, "started") for jid in short + long))
    if how == "sigterm":
        supervisor.process.send_signal(signal.SIGTERM)
    else:  # INT to the whole foreground process group. The children are in groups of their
        # own, so each hears it once, from the supervisor: the grace holds.
        os.killpg(supervisor.process.pid, signal.SIGINT)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()
    assert all(supervisor.mark(jid, "finished") for jid in short)
    assert not any(supervisor.mark(jid, "finished") for jid in long)
    assert not any(alive(pid) for pid in pids)
    assert live_jids(rdb) == set(long)  # nothing lost: the long ones wait for their retry
    for jid in long:
        failure = stored(rdb, jid).failure
        assert failure is not None and failure.errtype == "Interrupted"
    assert workers(rdb) == {}


async def test_a_second_term_ends_the_grace_of_every_child(
    broker: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    supervisor = supervisors.start(
        "jobs", "--url", url(broker), "--processes", "2", "--grace", "600"
    )
    wids = await eventually(lambda: len(found := workers(rdb)) == 2 and found, timeout=30)
    async with AsyncClient(url(broker)) as producer:
        jids = [await producer.push("nap", [600]) for _ in range(2)]
    await eventually(lambda: all(supervisor.mark(jid, "started") for jid in jids))
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(
        lambda: all(rdb.hget(keys.worker(wid), "state") == "terminate" for wid in wids)
    )
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)  # far short of the grace
    assert supervisor.process.returncode == 0, supervisor.log.read_text()
    for jid in jids:
        failure = stored(rdb, jid).failure
        assert failure is not None and failure.errtype == "Interrupted"


async def test_tstp_quiets_every_child(
    broker: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    supervisor = supervisors.start("jobs", "--url", url(broker), "--processes", "2")
    wids = await eventually(lambda: len(found := workers(rdb)) == 2 and found, timeout=30)
    supervisor.process.send_signal(signal.SIGTSTP)
    await eventually(
        lambda: all(rdb.hget(keys.worker(wid), "state") == "quiet" for wid in wids), timeout=20
    )
    assert not supervisor.exited()
    assert workers(rdb).keys() == wids.keys()  # quiet: none stopped, none replaced
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()


async def test_children_terminate_when_the_supervisor_is_killed(
    broker: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    supervisor = supervisors.start("jobs", "--url", url(broker), "--processes", "2")
    pids = set((await eventually(lambda: len(f := workers(rdb)) == 2 and f, timeout=30)).values())
    async with AsyncClient(url(broker)) as producer:
        jid = await producer.push("nap", [0.5])
        await eventually(lambda: supervisor.mark(jid, "started"))
        supervisor.process.kill()
        # no orphan: each child sees its link close, terminates with its grace, exits
        assert await producer.result(jid, timeout=30) is None
    await eventually(lambda: not any(alive(pid) for pid in pids), timeout=30)
    await eventually(lambda: workers(rdb) == {})


@pytest.mark.parametrize(
    "args",
    [
        ["--processes", "0", "jobs"],
        ["--processes", "2", "missing_module"],
        ["jobs", "--max-jobs", "x"],
    ],
    ids=["zero", "import", "not-a-number"],
)
async def test_usage_errors_exit_2_at_once(supervisors: Supervisors, args: list[str]) -> None:
    supervisor = supervisors.start(*args)
    await eventually(supervisor.exited, timeout=20)
    assert supervisor.process.returncode == 2
    assert "hopper-worker: " in supervisor.log.read_text()
    assert "started" not in supervisor.log.read_text()  # no child was tried


async def test_a_refused_password_stops_every_child_and_exits_1(
    start_broker: StartBroker, supervisors: Supervisors
) -> None:
    guarded = await start_broker(password="s3cret")
    wrong = f"tcp://:wrong@127.0.0.1:{guarded.port}"
    supervisor = supervisors.start("jobs", "--url", wrong, "--processes", "2")
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 1
    assert "Invalid password" in supervisor.log.read_text()
