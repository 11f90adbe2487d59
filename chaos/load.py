"""Raw-protocol load that rides out broker and Redis failures, with a ledger of what happened.

The clients behave as a careful real client does:
- a PUSH whose reply was lost is sent again with the same jid; Hopper refuses a live duplicate
  jid, so the resend of a push that had landed answers `jid ... is already in use`;
- a job is noted as run before its ACK is sent, and an ACK whose reply was lost is sent again
  (on a new connection if need be) until the broker answers.
So a job runs twice only if its push or its ACK was in flight when something failed; the ledger
keeps those jids, and a test checks that every duplicate is one of them.

As a process (`python -m chaos.load PORT QUEUE WID LOG [--threads N] [--hold N] [--fail]`) a
worker writes `S <jid>` to LOG before it runs a job, `D <jid>` after the ACK and `F <jid>` after a
FAIL, so a test that kills it with SIGKILL knows what was in flight. With `--fail` a job fails
its first planned_failures(jid) attempts (counted by the broker: failure.retry_count).
"""

import argparse
import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from chaos.conn import Conn, Hang, Lost
from tests.wire import WireError

RETRY_DELAY = 0.05  # seconds between attempts while the broker or Redis is away
GIVE_UP = 180.0  # seconds one push or ACK keeps trying before the run is declared broken
BEAT_INTERVAL = 5.0  # seconds between a worker's heartbeats
LIFETIME = 900.0  # seconds a worker process lives at most (it is normally killed or stopped)


class Ledger:
    """What the load saw: acknowledged pushes, runs, and what was in flight at a failure."""

    def __init__(self, log: TextIO | None = None) -> None:
        self.lock = threading.Lock()
        self.log = log
        self.pushed: dict[str, float] = {}  # jid -> time.time() of the acknowledgement
        self.uncertain: set[str] = set()  # pushes whose reply was lost at least once
        self.unsure_acks: set[str] = set()  # ACKs whose reply was lost at least once
        self.runs: Counter[str] = Counter()
        self.done: set[str] = set()  # jobs whose ACK was answered
        self.errors: Counter[str] = Counter()  # error replies and lost connections, by kind
        self.hangs = 0
        self.slowest = 0.0  # seconds, the slowest reply seen

    def started(self, jid: str) -> None:
        with self.lock:
            self.runs[jid] += 1
            if self.log:
                self.log.write(f"S {jid}\n")

    def failed(self, jid: str) -> None:
        if self.log:
            with self.lock:
                self.log.write(f"F {jid}\n")

    def finished(self, jid: str) -> None:
        with self.lock:
            self.done.add(jid)
            if self.log:
                self.log.write(f"D {jid}\n")

    def error(self, exc: Exception) -> None:
        kind = type(exc).__name__ if isinstance(exc, Lost) else " ".join(str(exc).split()[:3])
        with self.lock:
            self.errors[kind] += 1
            self.hangs += isinstance(exc, Hang)

    def in_flight(self) -> set[str]:
        """Jids whose push or ACK was in flight at a failure: the only ones that may run twice."""
        return self.uncertain | self.unsure_acks

    def duplicates(self) -> set[str]:
        return {jid for jid, count in self.runs.items() if count > 1}

    def missing(self) -> set[str]:
        """Acknowledged pushes that never ran."""
        return set(self.pushed) - set(self.runs)


class Client:
    """A connection that is re-opened on demand; every call is one attempt."""

    def __init__(self, port: int, ledger: Ledger, hello: dict[str, Any]) -> None:
        self.port = port
        self.ledger = ledger
        self.hello = hello
        self.conn: Conn | None = None

    def call(self, verb: str, arg: Any = None) -> Any:
        """One attempt; raises WireError (an error reply) or Lost (noted in the ledger)."""
        started = time.monotonic()
        try:
            if self.conn is None:
                self.conn = Conn(self.port, self.hello)
            return self.conn.call(verb, arg)
        except Lost as exc:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            self.ledger.error(exc)
            raise
        finally:
            elapsed = time.monotonic() - started
            if elapsed > self.ledger.slowest:
                self.ledger.slowest = elapsed

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# A chaos job's retries come back after 1-2 s instead of the default 15-45 s: the runs wait
# for every retry, and what they prove (nothing lost, duplicates only of jobs in flight at a
# kill) does not depend on the delay. The retry path is the same (retries set, scheduler).
RETRY_BACKOFF = {"kind": "fixed", "delay": 2, "jitter": 0.5}


def job(jid: str, queue: str, reserve_for: int) -> dict[str, Any]:
    """A chaos job; those whose jid ends in 0-3 belong to one of four groups (lanes), so every
    fault also lands among grouped jobs."""
    custom: dict[str, Any] = {"backoff": RETRY_BACKOFF}
    if jid[-1] in "0123":
        custom["group"] = f"g{jid[-1]}"
    return {
        "jid": jid,
        "jobtype": "chaos",
        "args": [jid],
        "queue": queue,
        "reserve_for": reserve_for,
        "custom": custom,
    }


def planned_failures(jid: str) -> int:
    """How many attempts of a job fail before one succeeds, in a run with failures: fixed by
    the jid (about a quarter of the jobs fail once, an eighth twice)."""
    return (0, 0, 0, 0, 0, 1, 1, 2)[zlib.crc32(jid.encode()) % 8]


def attempt_of(job: dict[str, Any]) -> int:
    """The attempt a fetched job is at (0: its first run), as the broker counted the failures
    (an expired reservation counts as one)."""
    failure = job.get("failure")
    return int(failure["retry_count"]) + 1 if failure else 0


class Producer(threading.Thread):
    """Pushes `prefix-0000000`, `prefix-0000001`, ... one at a time until stopped."""

    def __init__(
        self, port: int, ledger: Ledger, queue: str, prefix: str, reserve_for: int = 4
    ) -> None:
        super().__init__(daemon=True)
        self.client = Client(port, ledger, {"hostname": "producer"})
        self.ledger = ledger
        self.queue = queue
        self.prefix = prefix
        self.reserve_for = reserve_for
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(10**7):
                if self.stop.is_set():
                    break
                self.push(f"{self.prefix}-{n:07d}")
        except BaseException as exc:
            self.failure = exc
        finally:
            self.client.close()

    def push(self, jid: str) -> None:
        payload = job(jid, self.queue, self.reserve_for)
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                self.client.call("PUSH", payload)
            except WireError as exc:
                if "already in use" not in str(exc):  # else: the lost push had landed
                    self.ledger.error(exc)
                    self.ledger.uncertain.add(jid)  # it may have run in Redis
                    if self.stop.wait(RETRY_DELAY):
                        return
                    continue
            except Lost:
                self.ledger.uncertain.add(jid)
                if self.stop.wait(RETRY_DELAY):
                    return
                continue
            self.ledger.pushed[jid] = time.time()
            return
        raise RuntimeError(f"push {jid} did not get through in {GIVE_UP}s")


class Worker(threading.Thread):
    """FETCH, run (note it), ACK until acknowledged (or, with `fail`, FAIL the planned
    failures); BEAT now and then; until stopped."""

    def __init__(
        self,
        port: int,
        ledger: Ledger,
        queue: str,
        wid: str,
        work: float = 0.0,
        hold: int = 0,
        fail: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self.client = Client(port, ledger, {"wid": wid, "hostname": "chaos"})
        self.ledger = ledger
        self.queue = queue
        self.wid = wid
        self.work = work  # seconds each job takes
        self.hold = hold  # > 0: fetch this many jobs and keep them without ACK (until killed)
        self.failing = fail  # FAIL the first planned_failures(jid) attempts of a job
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:
            self.failure = exc
        finally:
            self.client.close()

    def loop(self) -> None:
        beat_at = time.monotonic() + BEAT_INTERVAL
        held = 0
        while not self.stop.is_set():
            if time.monotonic() > beat_at:
                beat_at = time.monotonic() + BEAT_INTERVAL
                self.attempt("BEAT", {"wid": self.wid})
            payload = self.attempt("FETCH", self.queue)
            if payload is None:
                continue
            fetched = json.loads(payload)
            jid = fetched["jid"]
            self.ledger.started(jid)
            if self.hold:
                held += 1
                if held >= self.hold:
                    self.stop.wait(LIFETIME)
                continue
            if self.work:
                time.sleep(self.work)
            if self.failing and attempt_of(fetched) < planned_failures(jid):
                self.fail(jid)
                self.ledger.failed(jid)
                continue
            self.ack(jid)
            self.ledger.finished(jid)

    def attempt(self, verb: str, arg: Any) -> Any:
        """One call whose failure only costs a short pause (None then)."""
        try:
            return self.client.call(verb, arg)
        except WireError as exc:
            self.ledger.error(exc)
        except Lost:
            pass
        self.stop.wait(RETRY_DELAY)
        return None

    def ack(self, jid: str) -> None:
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                self.client.call("ACK", {"jid": jid})
                return
            except (WireError, Lost) as exc:
                if isinstance(exc, WireError):
                    self.ledger.error(exc)
                self.ledger.unsure_acks.add(jid)
                time.sleep(RETRY_DELAY)
        raise RuntimeError(f"ACK {jid} did not get through in {GIVE_UP}s")

    def fail(self, jid: str) -> None:
        """FAIL until answered; `Job not found` means an earlier attempt whose reply was lost
        landed, or the reservation is gone (expired): the job comes back either way."""
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                self.client.call("FAIL", {"jid": jid, "errtype": "Planned", "message": "chaos"})
                return
            except WireError as exc:
                if "not found" in str(exc):
                    return
                self.ledger.error(exc)
            except Lost:
                pass
            time.sleep(RETRY_DELAY)
        raise RuntimeError(f"FAIL {jid} did not get through in {GIVE_UP}s")


def read_log(path: str) -> tuple[Counter[str], set[str]]:
    """Runs (`S` lines) and finished jobs (`D` lines) of a worker process's log."""
    runs: Counter[str] = Counter()
    done: set[str] = set()
    with open(path) as f:
        for line in f:
            mark, _, jid = line.strip().partition(" ")
            if mark == "S":
                runs[jid] += 1
            elif mark == "D":
                done.add(jid)
    return runs, done


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `check` until it is truthy; bounded."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached in {timeout}s")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description="a worker process for fault runs")
    parser.add_argument("port", type=int)
    parser.add_argument("queue")
    parser.add_argument("wid")
    parser.add_argument("log")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=float, default=0.0, help="seconds each job takes")
    parser.add_argument("--hold", type=int, default=0, help="keep this many jobs, never ACK")
    parser.add_argument("--fail", action="store_true", help="FAIL the planned failures")
    args = parser.parse_args()
    with open(args.log, "a", buffering=1) as log:
        ledger = Ledger(log)
        workers = [
            Worker(args.port, ledger, args.queue, args.wid, args.work, args.hold, args.fail)
            for _ in range(args.threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(LIFETIME)


if __name__ == "__main__":
    main()
