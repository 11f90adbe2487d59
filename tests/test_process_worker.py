"""`hopper-worker --processes N`: a supervisor and its worker processes, all real processes,
against a real broker: CPU-bound jobs on several cores, a child SIGKILLed, signals, recycling."""

import bisect
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import trio

from broker.app import App
from broker.store import keys
from broker.store.keys import QueueKeys
from client import AsyncClient, Job
from client.supervisor import Supervisor
from tests.conftest import StartBroker, eventually, live_jids

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DEFAULT = QueueKeys("default")
WINDOW = 0.005  # seconds: the stretches in which the burns' CPU time is compared with wall time
AGAIN_AT_ONCE = {"backoff": {"kind": "fixed", "delay": 0}}  # a failed job is retried at once

JOBS_MODULE = """
import json
import os
import time
from pathlib import Path

from client import Worker, current_job

MARKS = Path(os.environ["MARKS"])
worker = Worker(heartbeat=0.1, concurrency=1)


def mark(name, **fields):
    fields["pid"] = os.getpid()
    path = MARKS / f"{current_job().jid}.{name}"
    path.with_suffix(".tmp").write_text(json.dumps(fields))
    path.with_suffix(".tmp").replace(path)  # whole, for whoever reads it


@worker.job()
def nap(seconds):
    mark("started")
    time.sleep(seconds)
    mark("finished")


@worker.job()
def burn(round, together, seconds):
    \"\"\"CPU-bound: once `together` burns of the round have started (bounded wait), spin
    for `seconds`.\"\"\"
    mark(f"started-{round}")
    deadline = time.monotonic() + 30
    while len(list(MARKS.glob(f"*.started-{round}"))) < together and time.monotonic() < deadline:
        time.sleep(0.01)
    samples = [(time.time(), time.thread_time())]  # (wall, this thread's CPU) every 0.5 ms
    while samples[-1][0] - samples[0][0] < seconds:
        now = time.time()
        if now - samples[-1][0] >= 0.0005:
            samples.append((now, time.thread_time()))
    mark("finished", samples=samples)
"""


class Supervised:
    """`python -m client jobs --processes N ...` (the hopper-worker command) as a process."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.marks = directory / "marks"
        self.marks.mkdir(exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("HOPPER_")}
        environment.update({"MARKS": str(self.marks), "PYTHONPATH": str(ROOT)})
        self.log = directory / "supervisor.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "client", *args],
                cwd=directory,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a shell gives a command
            )

    def mark(self, jid: str, name: str) -> dict[str, Any] | None:
        path = self.marks / f"{jid}.{name}"
        if not path.exists() or not (text := path.read_text()):
            return None
        fields: dict[str, Any] = json.loads(text)
        return fields

    def exited(self) -> bool:
        return self.process.poll() is not None


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS_MODULE))
    return tmp_path


@pytest.fixture
def supervisors() -> Iterator[list[Supervised]]:
    started: list[Supervised] = []
    yield started
    for supervisor in started:
        if not supervisor.exited():
            supervisor.process.kill()
            supervisor.process.wait(10)
        print(supervisor.log.read_text())  # shown when the test failed


@pytest.fixture
async def lively(start_broker: StartBroker) -> App:
    """A broker that fails a vanished worker's jobs back one second after its last beat."""
    return await start_broker(worker_ttl=1.0)


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


def workers(db: redis.Redis) -> dict[str, int]:
    """wid -> pid of the workers registered with the broker (the pid each said in HELLO)."""
    found: dict[str, int] = {}
    for wid in map(str, db.zrange(keys.WORKERS, 0, -1)):  # decoded: `rdb` decodes replies
        info = db.hget(keys.worker(wid), "info")
        if info is not None:
            found[wid] = json.loads(info)["pid"]
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return next(
            line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("State:")
        )  # fmt: skip
    except (OSError, StopIteration):
        return "Z"


def stored(db: redis.Redis, jid: str) -> Job:
    stored = db.hget(DEFAULT.jobs, jid)
    assert isinstance(stored, str)
    return msgspec.json.decode(stored, type=Job)


async def test_cpu_bound_jobs_run_four_at_a_time_on_more_than_one_core(
    lively: App, module_dir: Path, supervisors: list[Supervised], rdb: redis.Redis
) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: nothing to spread over")
    supervisor = Supervised(module_dir, "jobs", "--url", url(lively), "--processes", "4")
    supervisors.append(supervisor)
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
    lively: App, module_dir: Path, supervisors: list[Supervised], rdb: redis.Redis
) -> None:
    supervisor = Supervised(module_dir, "jobs", "--url", url(lively), "--processes", "4")
    supervisors.append(supervisor)
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


async def test_ctrl_c_gives_every_child_its_grace_once_then_all_exit(
    broker: App, module_dir: Path, supervisors: list[Supervised], rdb: redis.Redis
) -> None:
    supervisor = Supervised(
        module_dir, "jobs", "--url", url(broker), "--processes", "4", "--grace", "3"
    )
    supervisors.append(supervisor)
    await eventually(lambda: len(workers(rdb)) == 4, timeout=30)
    pids = set(workers(rdb).values())
    async with AsyncClient(url(broker)) as producer:
        short = [await producer.push("nap", [1]) for _ in range(2)]
        long = [await producer.push("nap", [60]) for _ in range(2)]
    await eventually(lambda: all(supervisor.mark(jid, "started") for jid in short + long))
    # Ctrl-C in a terminal: INT to the whole foreground process group. The children are in
    # groups of their own, so each hears it once, from the supervisor: the grace holds.
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


async def test_tstp_quiets_every_child(
    broker: App, module_dir: Path, supervisors: list[Supervised], rdb: redis.Redis
) -> None:
    supervisor = Supervised(module_dir, "jobs", "--url", url(broker), "--processes", "2")
    supervisors.append(supervisor)
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


@pytest.mark.parametrize(
    "limit", [["--max-jobs", "2"], ["--max-memory", "1"]], ids=["jobs", "memory"]
)
async def test_a_child_is_recycled_at_its_limit(
    broker: App, module_dir: Path, supervisors: list[Supervised], limit: list[str]
) -> None:
    # one process (a limit alone implies --processes 1); 1 MiB: every job passes it
    supervisor = Supervised(module_dir, "jobs", "--url", url(broker), *limit)
    supervisors.append(supervisor)
    async with AsyncClient(url(broker)) as producer:
        jids = [await producer.push("nap", [0]) for _ in range(4)]
        for jid in jids:
            await producer.result(jid, timeout=30)
    pids = [supervisor.mark(jid, "finished") for jid in jids]
    per_child = 2 if limit[0] == "--max-jobs" else 1
    # jobs fetched before a child retired may run in it too, past the limit
    assert len({mark["pid"] for mark in pids if mark}) >= len(jids) // (per_child + 1)
    assert "is retiring: starting another" in supervisor.log.read_text()
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()


async def test_children_terminate_when_the_supervisor_is_killed(
    broker: App, module_dir: Path, supervisors: list[Supervised], rdb: redis.Redis
) -> None:
    supervisor = Supervised(module_dir, "jobs", "--url", url(broker), "--processes", "2")
    supervisors.append(supervisor)
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
async def test_usage_errors_exit_2_at_once(
    module_dir: Path, supervisors: list[Supervised], args: list[str]
) -> None:
    supervisor = Supervised(module_dir, *args)
    supervisors.append(supervisor)
    await eventually(supervisor.exited, timeout=20)
    assert supervisor.process.returncode == 2
    assert "hopper-worker: " in supervisor.log.read_text()
    assert "started" not in supervisor.log.read_text()  # no child was tried


async def test_a_refused_password_stops_every_child_and_exits_1(
    start_broker: StartBroker, module_dir: Path, supervisors: list[Supervised]
) -> None:
    guarded = await start_broker(password="s3cret")
    wrong = f"tcp://:wrong@127.0.0.1:{guarded.port}"
    supervisor = Supervised(module_dir, "jobs", "--url", wrong, "--processes", "2")
    supervisors.append(supervisor)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 1
    assert "Invalid password" in supervisor.log.read_text()


async def test_a_supervisor_in_code(
    broker: App,
    module_dir: Path,
    rdb: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    nursery: trio.Nursery,
) -> None:
    monkeypatch.chdir(module_dir)  # the children import `jobs` from there, as hopper-worker
    monkeypatch.setenv("MARKS", str(module_dir))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    supervisor = Supervisor(["jobs", "--url", url(broker)], processes=2)
    exit_codes = []

    async def supervise() -> None:
        exit_codes.append(await supervisor.arun())

    nursery.start_soon(supervise)
    await eventually(lambda: len(workers(rdb)) == 2, timeout=30)
    assert {child.wid for child in supervisor.children} == workers(rdb).keys()
    async with AsyncClient(url(broker)) as producer:
        assert await producer.result(await producer.push("nap", [0]), timeout=30) is None
    supervisor.terminate()
    await eventually(lambda: exit_codes == [0], timeout=30)
    assert workers(rdb) == {}
