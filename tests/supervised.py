"""Process workers under test: a jobs module, the hopper-worker command with --processes (or a
recycling flag) as a real process, and what the broker and /proc say of its children."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec
import redis

from hopper_broker.app import App
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from hopper_client import Job

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = QueueKeys("default")

JOBS_MODULE = """
import json
import os
import time
from pathlib import Path

from hopper_client import Worker, current_job

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
    """`python -m hopper_client jobs --processes N ...` (the hopper-worker command) as a process."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.marks = directory / "marks"
        self.marks.mkdir(exist_ok=True)
        environment = {k: v for k, v in os.environ.items() if not k.startswith("HOPPER_")}
        environment.update({"MARKS": str(self.marks), "PYTHONPATH": str(ROOT)})
        self.log = directory / "supervisor.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hopper_client", *args],
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


class Supervisors:
    """The supervisors a test starts, all in one directory holding `jobs.py`; killed at the
    end (their logs printed: pytest shows them when the test failed)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Supervised] = []

    def __enter__(self) -> "Supervisors":
        (self.directory / "jobs.py").write_text(textwrap.dedent(JOBS_MODULE))
        return self

    def start(self, *args: str) -> Supervised:
        """`hopper-worker ARGS` in the directory."""
        supervisor = Supervised(self.directory, *args)
        self.started.append(supervisor)
        return supervisor

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for supervisor in self.started:
            if not supervisor.exited():
                os.killpg(supervisor.process.pid, signal.SIGKILL)
                supervisor.process.wait(10)
            print(supervisor.log.read_text())


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
