"""Integration tests of an application's tasks against a real broker (the pytest plugin's parts,
usable without pytest too).

`TestBroker` runs `hopper run` as a child process on a temporary data directory, with its
embedded Redis. `WorkerRun` runs a registry's worker in a thread against it, points the
registry's pushes at it, and waits until the jobs pushed through the registry have finished.
"""

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import trio

from hopper_client.client import Client
from hopper_client.schema.jobs import Job, JobState
from hopper_client.tasks import Tasks
from hopper_client.worker import Worker

START_TIMEOUT = 30.0  # seconds for the broker (and its Redis) to listen, or the worker to start
STOP_TIMEOUT = 20.0  # seconds for the broker or the worker to stop before it is killed/left
WAIT_STEP = 0.02  # seconds between looks at the jobs `WorkerRun.wait` waits for
# a job in one of these states has run (a retrying one failed and comes back later)
# short broker waits, so a worker stops at once and a job pushed for soon runs soon
BROKER_ARGS = ("--fetch-timeout", "0.2", "--scheduler-interval", "0.1")
FINISHED = frozenset({"done", "dead", "discarded", "cancelled", "retrying"})


class TestBroker:
    """`hopper run` on 127.0.0.1 and a free port, storing in `data_dir` (embedded Redis);
    `args` are more `hopper run` flags (they win over BROKER_ARGS)."""

    __test__ = False  # not a test class for pytest

    def __init__(self, data_dir: Path, args: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.log = data_dir / "broker.log"
        self.args = ["--bind", f"127.0.0.1:{self.port}", "--data-dir", str(data_dir)]
        self.args += [*BROKER_ARGS, *args]
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and return once it listens (RuntimeError with its log if not)."""
        if importlib.util.find_spec("hopper_broker") is None:
            raise RuntimeError(
                "a test broker needs the broker installed beside the client: "
                "pip install hopper-broker (docs/packaging.md)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPPER_", "FAKTORY_"))}
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "hopper_broker", "run", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the broker exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(WAIT_STEP)
        self.stop()
        raise RuntimeError(f"the broker did not listen: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """TERM the broker (it stops its Redis); kill it if it lingers."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class WorkerRun:
    """A registry's worker running in a thread against `url`, and the jobs pushed meanwhile.

    While it runs, the registry pushes to `url` (not eagerly); `wait()` returns once every
    job pushed through the registry's tasks (by the test or by jobs) has run.
    """

    def __init__(self, tasks: Tasks, url: str, concurrency: int = 4) -> None:
        self.tasks = tasks
        self.url = url
        self.client = Client(url)
        self.worker: Worker = tasks.worker(url=url, concurrency=concurrency, grace=5.0)
        self.jids: list[str] = []
        self._saved = (tasks.url, tasks.password, tasks.eager)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hopper-test-worker", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> None:
        """Point the registry at the broker and start the worker (registered on return)."""
        self.tasks.connect(self.url)
        self.tasks.eager = False
        self.tasks.watchers.append(self._watch)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the worker did not start: {self._error!r}")

    def stop(self) -> None:
        """Stop the worker (running jobs get 5 s) and give the registry back its settings."""
        if self._started.is_set() and self._thread.is_alive():
            self.worker.terminate()
        self._thread.join(STOP_TIMEOUT)
        self.tasks.watchers.remove(self._watch)
        url, password, eager = self._saved
        self.tasks.connect(url, password)
        self.tasks.eager = eager
        self.client.close()

    def wait(self, timeout: float = 30.0, *, failed_ok: bool = False) -> list[JobState]:
        """Wait until the jobs pushed through the registry so far, and those they push, have
        run; returns their states. A failed job raises AssertionError unless `failed_ok`;
        TimeoutError after `timeout` seconds (a job scheduled for later never finishes)."""
        deadline = time.monotonic() + timeout
        states: dict[str, JobState] = {}
        while len(states) < len(self.jids):
            for jid in self.jids[len(states) :]:
                while (state := self.client.state(jid)).state not in FINISHED:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"job {jid} is still {state.state} after {timeout} s")
                    time.sleep(WAIT_STEP)
                states[jid] = state
        failed = [state for state in states.values() if state.state != "done"]
        if failed and not failed_ok:
            raise AssertionError("jobs failed:\n" + "\n".join(map(_describe, failed)))
        return list(states.values())

    def _watch(self, job: Job) -> None:
        self.jids.append(job.jid)

    def _serve(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _run(self) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.worker.arun)
            self._started.set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _describe(state: JobState) -> str:
    failure = state.failure
    why = f"{failure.errtype}: {failure.message}" if failure else "no failure recorded"
    return f"  {state.jobtype} {state.jid} {state.state}: {why}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
