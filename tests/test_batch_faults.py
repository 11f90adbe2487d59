"""A batch under faults (issue 14): jobs of a batch and of its child batch fail at random and
retry, worker processes are killed with SIGKILL and a broker process is killed and started
again mid-way, two brokers share one Redis; each callback is still pushed exactly once, in order,
and the batches end with the right counts.

The test consumes the callbacks itself (their own queue, on the broker that is never killed),
so it counts every push of them.
"""

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chaos.conn import Conn
from chaos.figures import record
from chaos.load import planned_failures, wait_for
from chaos.marks import CHAOS
from hopper_broker.store.keys import BATCHES_DUE, QueueKeys
from tests.conftest import BrokerProcess, check_store, live_jobs
from tests.test_fault import FAST_ARGS, ROOT, kill

QUEUE = "batchy"
CALLBACKS = "batch-cbs"
BACKOFF = {"kind": "fixed", "delay": 0.2}  # retries come back fast
RESERVE_FOR = 2  # seconds: a killed worker's jobs come back soon
CALLBACK_JIDS = ("parent-complete", "parent-success", "child-complete", "child-success")

# A fault at a share of the jobs done: ("worker", n) kills worker process n and starts another
# on the same broker; ("broker", n) kills broker n (never 0, the test's own) and starts it again.
Fault = tuple[float, str, int]


def callback(jid: str) -> dict[str, Any]:
    return {"jid": jid, "jobtype": "Callback", "args": [], "queue": CALLBACKS}


def member(jid: str, bid: str) -> dict[str, Any]:
    return {
        "jid": jid,
        "jobtype": "chaos",
        "args": [jid],
        "queue": QUEUE,
        "reserve_for": RESERVE_FOR,
        "custom": {"bid": bid, "backoff": BACKOFF},
    }


def job_state(conn: Conn, jid: str) -> str:
    state: str = json.loads(conn.call("JOB", f"STATE {jid}"))["state"]
    return state


def status(conn: Conn, bid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(conn.call("BATCH", f"STATUS {bid}"))
    return found


class Workers:
    """Worker processes (`python -m chaos.load ... --fail`), each logging to its own file."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []

    def spawn(self, port: int) -> None:
        log = self.tmp_path / f"w{len(self.logs)}.log"
        self.logs.append(log)
        self.ports.append(port)
        command = [sys.executable, "-m", "chaos.load", str(port), QUEUE, log.stem, str(log)]
        options = ["--threads", "2", "--work", "0.005", "--fail"]
        self.processes.append(subprocess.Popen([*command, *options], cwd=ROOT))

    def replace(self, n: int) -> None:
        """Kill the nth live worker process with SIGKILL and start another on its broker."""
        live = [i for i, p in enumerate(self.processes) if p.poll() is None]
        victim = live[n % len(live)]
        kill(self.processes[victim])
        self.spawn(self.ports[victim])

    def read(self) -> tuple[Counter[str], set[str], Counter[str], set[str]]:
        """Runs, ACKed jobs and FAILs over all the logs, and the jobs that were in flight in a
        process when it was killed (started, neither ACKed nor FAILed after)."""
        runs: Counter[str] = Counter()
        fails: Counter[str] = Counter()
        acks: Counter[str] = Counter()
        in_flight: set[str] = set()
        for log in self.logs:
            if not log.exists():
                continue
            marks: dict[str, Counter[str]] = {"S": Counter(), "D": Counter(), "F": Counter()}
            with log.open() as f:
                for line in f:
                    mark, _, jid = line.strip().partition(" ")
                    if mark in marks:
                        marks[mark][jid] += 1
            runs += marks["S"]
            acks += marks["D"]
            fails += marks["F"]
            in_flight |= {
                jid for jid, n in marks["S"].items() if n > marks["D"][jid] + marks["F"][jid]
            }
        done = set(acks)
        return runs, done, fails, in_flight

    def acked(self) -> int:
        return len(self.read()[1])

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                kill(process)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path)
    yield started
    started.stop()


class CallbackLog(threading.Thread):
    """The test's own worker of the callback queue, on the broker that is never killed, running
    all along: every callback pushed is fetched and ACKed here, in order, and counted."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = Conn(port, {"wid": "callbacks", "hostname": "test"})
        self.fetched: list[str] = []
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                payload = self.conn.call("FETCH", CALLBACKS)  # waits up to the fetch timeout
                if payload is not None:
                    jid = json.loads(payload)["jid"]
                    self.fetched.append(jid)
                    self.conn.call("ACK", {"jid": jid})
        except BaseException as exc:
            self.failure = exc
        finally:
            self.conn.close()

    def all_ran(self) -> bool:
        assert self.failure is None, self.failure
        return set(CALLBACK_JIDS) <= set(self.fetched)

    def finish(self) -> None:
        self.stop.set()
        self.join(10)
        assert not self.is_alive() and self.failure is None, self.failure


@pytest.mark.parametrize(
    ("jobs", "processes", "faults"),
    [
        pytest.param(200, 2, [(0.25, "worker", 0), (0.5, "broker", 1)], id="fast"),
        pytest.param(
            1000,
            4,
            [
                (0.1, "worker", 0),
                (0.2, "broker", 1),
                (0.3, "worker", 1),
                (0.4, "worker", 2),
                (0.5, "broker", 1),
                (0.6, "worker", 3),
                (0.7, "worker", 0),
                (0.8, "broker", 1),
                (0.9, "worker", 1),
                (0.95, "broker", 1),  # near the end, as the last ACKs make callbacks due
                (0.98, "worker", 2),
                (0.99, "broker", 1),
            ],
            id="chaos",
            marks=CHAOS,
        ),
    ],
)
def test_batch_callbacks_fire_once_through_faults(
    broker_process: Callable[..., BrokerProcess],
    redis_url: str,
    rdb: redis.Redis,
    workers: Workers,
    jobs: int,
    processes: int,
    faults: list[Fault],
) -> None:
    started = time.monotonic()
    loops = ("--reaper-interval", "0.05", "--scheduler-interval", "0.05")
    brokers = [broker_process(*FAST_ARGS, *loops) for _ in range(2)]
    conn = Conn(brokers[0].port, {})
    callbacks = CallbackLog(brokers[0].port)
    callbacks.start()

    def new(**spec: Any) -> str:
        bid: bytes = conn.call("BATCH", "NEW " + json.dumps(spec))
        return bid.decode()

    parent = new(
        description="faults",
        complete=callback("parent-complete"),
        success=callback("parent-success"),
    )
    child = new(
        parent_bid=parent, complete=callback("child-complete"), success=callback("child-success")
    )
    for n in range(processes):  # half on each broker; jobs may run before the commits
        workers.spawn(brokers[n % 2].port)
    kids = jobs // 10
    # the child's jobs first: its stages end early, the parent's on the last jobs' ACKs
    members = [member(f"child-{n:05d}", child) for n in range(kids)]
    members += [member(f"parent-{n:05d}", parent) for n in range(jobs)]
    for at in range(0, len(members), 100):
        assert json.loads(conn.call("PUSHB", members[at : at + 100])) == {}
    assert conn.call("BATCH", f"COMMIT {child}") == b"OK"
    assert conn.call("BATCH", f"COMMIT {parent}") == b"OK"

    kills = restarts = 0
    for share, what, n in faults:
        target = int(share * len(members))
        wait_for(lambda t=target: workers.acked() >= t, 60, f"{target} jobs ACKed")
        if what == "worker":
            workers.replace(n)
            kills += 1
        else:
            brokers[n].kill()
            brokers[n].start()
            restarts += 1
    wait_for(callbacks.all_ran, 120 if jobs > 500 else 40, "every callback ran")
    elapsed = time.monotonic() - started
    callbacks.finish()

    # The callbacks: each pushed once, complete before success, a child's stage before its
    # parent's; nothing more can come (both batches finished) and nothing is left due.
    assert Counter(callbacks.fetched) == dict.fromkeys(CALLBACK_JIDS, 1), callbacks.fetched
    order = callbacks.fetched.index
    assert order("child-complete") < order("parent-complete") < order("parent-success")
    assert order("child-complete") < order("child-success") < order("parent-success")
    for bid, total in ((parent, jobs), (child, kids)):
        found = status(conn, bid)
        counts = {k: found[k] for k in ("total", "pending", "failed", "complete_st", "success_st")}
        assert counts == {
            "total": total,
            "pending": 0,
            "failed": 0,
            "complete_st": "2",
            "success_st": "2",
        }
    assert conn.call("FETCH", CALLBACKS) is None
    assert rdb.zcard(BATCHES_DUE) == 0
    assert rdb.llen(QueueKeys(CALLBACKS).queue) == 0 and live_jobs(rdb, CALLBACKS) == 0

    # Every job ran and was ACKed (the broker says so; a worker's log misses an ACK that
    # landed just before the process was killed); the planned failures happened; nothing is
    # left.
    runs, done, fails, in_flight = workers.read()
    jids = {m["jid"] for m in members}
    assert jids - done <= in_flight
    states = Counter(job_state(conn, jid) for jid in jids)
    assert states == {"done": len(jids)}, states
    assert fails, "no job failed"
    assert set(fails) <= {jid for jid in jids if planned_failures(jid)}
    assert live_jobs(rdb, QUEUE) == 0
    assert rdb.zcard(QueueKeys(QUEUE).retries) == 0
    assert rdb.zcard(QueueKeys(QUEUE).working) == 0
    conn.close()
    workers.stop()
    check_store(redis_url)
    for broker in brokers:
        assert broker.stop() == 0
        assert "Traceback" not in broker.log.read_text()
    record(
        "batch-faults",
        pushed=len(members),
        kills=kills + restarts,
        failures=sum(fails.values()),
        # runs beyond the planned ones: jobs in flight at a kill, or whose reservation expired
        duplicates=sum(1 for jid, count in runs.items() if count > planned_failures(jid) + 1),
        in_flight=len(in_flight),
        callbacks=len(callbacks.fetched),
        seconds=round(elapsed, 1),
        lost=len(jids - set(runs)),
    )
