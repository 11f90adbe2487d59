"""`hopper-worker` as a real process: signals, graceful shutdown with jobs in flight, exit codes."""

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis

from hopper_broker.app import App
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from hopper_client import AsyncClient, Job
from tests.conftest import StartBroker, eventually, live_jids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("store_mode"),
    pytest.mark.on_cluster,
]
DEFAULT = QueueKeys("default")

JOBS_MODULE = """
import os
import time
from pathlib import Path

from hopper_client import Worker, current_job

MARKS = Path(os.environ["MARKS"])
worker = Worker(heartbeat=0.05)


@worker.job()
def nap(seconds):
    jid = current_job().jid
    (MARKS / f"{jid}.started").touch()
    time.sleep(seconds)
    (MARKS / f"{jid}.finished").touch()
"""


class WorkerProcess:
    def __init__(self, directory: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.marks = directory / "marks"
        self.marks.mkdir(exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("HOPPER_")}
        environment.update({"MARKS": str(self.marks), **(env or {})})
        self.log = directory / "worker.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hopper_client", *args],
                cwd=directory,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def marked(self, jid: str, mark: str) -> bool:
        return (self.marks / f"{jid}.{mark}").exists()

    def exited(self) -> bool:
        return self.process.poll() is not None


@pytest.fixture
def module_dir(tmp_path: Path) -> Path:
    (tmp_path / "jobs.py").write_text(textwrap.dedent(JOBS_MODULE))
    return tmp_path


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if not worker.exited():
            worker.process.kill()
            worker.process.wait(10)


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def test_sigterm_finishes_short_jobs_and_fails_long_ones_back(
    broker: App, module_dir: Path, processes: list[WorkerProcess], rdb: redis.Redis
) -> None:
    worker = WorkerProcess(
        module_dir, "jobs", "--url", url(broker), "--concurrency", "4", "--grace", "2"
    )
    processes.append(worker)
    async with AsyncClient(url(broker)) as producer:
        short = [await producer.push("nap", [1]) for _ in range(2)]
        long = [await producer.push("nap", [60]) for _ in range(2)]
        waiting = await producer.push("nap", [0])  # no free slot: never fetched
    await eventually(lambda: all(worker.marked(jid, "started") for jid in short + long))
    worker.process.send_signal(signal.SIGTERM)
    await eventually(worker.exited, timeout=20)
    assert worker.process.returncode == 0, worker.log.read_text()
    assert all(worker.marked(jid, "finished") for jid in short)
    assert not any(worker.marked(jid, "finished") for jid in long)
    # no job lost: the short ones are acknowledged, the long ones wait for a retry
    assert live_jids(rdb) == {*long, waiting}
    assert rdb.lrange(DEFAULT.queue, 0, -1) == [waiting]
    assert rdb.zcard(DEFAULT.working) == 0
    for jid in long:
        assert rdb.zscore(DEFAULT.retries, jid) is not None
        job = msgspec.json.decode(rdb.hget(DEFAULT.jobs, jid), type=Job)
        assert job.failure is not None and job.failure.errtype == "Interrupted"


async def test_tstp_quiets_and_the_broker_hears_it(
    broker: App, module_dir: Path, processes: list[WorkerProcess], rdb: redis.Redis
) -> None:
    worker = WorkerProcess(module_dir, "jobs", env={"HOPPER_URL": url(broker)})
    processes.append(worker)
    wids = await eventually(lambda: rdb.zrange(keys.WORKERS, 0, -1))
    worker.process.send_signal(signal.SIGTSTP)
    await eventually(lambda: rdb.hget(keys.worker(wids[0]), "state") == "quiet")
    assert not worker.exited()
    worker.process.send_signal(signal.SIGINT)
    await eventually(worker.exited, timeout=20)
    assert worker.process.returncode == 0, worker.log.read_text()


@pytest.mark.parametrize(
    "args",
    [
        ["missing_module"],
        ["jobs:nothing"],
        ["jobs:MARKS"],
        [":worker"],
        ["broken"],
        ["raises"],
        ["jobs", "--log-level", "verbose"],
        ["jobs", "--queues", ","],
        ["jobs", "--queues", "a b"],
        ["jobs", "--concurrency", "-2"],
        ["jobs", "--grace", "nan"],
    ],
    ids=lambda args: " ".join(args),
)
async def test_usage_errors_exit_2(
    module_dir: Path, processes: list[WorkerProcess], args: list[str]
) -> None:
    (module_dir / "broken.py").write_text("def oops(:\n")
    (module_dir / "raises.py").write_text("raise RuntimeError('no settings')\n")
    worker = WorkerProcess(module_dir, *args, env={"HOPPER_URL": "tcp://127.0.0.1:1"})
    processes.append(worker)
    await eventually(worker.exited)
    assert worker.process.returncode == 2
    assert "hopper-worker:" in worker.log.read_text()


async def test_refused_password_exits_1(
    start_broker: StartBroker, module_dir: Path, processes: list[WorkerProcess]
) -> None:
    guarded = await start_broker(password="s3cret")
    worker = WorkerProcess(module_dir, "jobs", "--url", f"tcp://:wrong@127.0.0.1:{guarded.port}")
    processes.append(worker)
    await eventually(worker.exited)
    assert worker.process.returncode == 1
    assert "Invalid password" in worker.log.read_text()
