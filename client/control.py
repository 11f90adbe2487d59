"""Job control inside a worker: snoozing, deadlines and cooperative cancellation.

A job function raises `Snooze(seconds)` to hand its job back for later, or `Fatal` to fail it
for good. A job may carry a
deadline (`custom.timeout`, seconds). A running job is stopped when the broker no longer lets
the worker hold it (cancelled, its reservation lost), when its deadline passes, or when the
worker's grace at shutdown is over: an async job is cancelled; a sync job (a thread cannot be
interrupted) sees it through `job_cancelled()` / `check_cancelled()`.
"""

import math
import threading
from contextvars import ContextVar
from datetime import timedelta
from typing import Literal

import trio

from hopper_client.schema.jobs import Job

MAX_SNOOZE = 365 * 86_400  # seconds a job may snooze at most (Hopper's limit)

Why = Literal["dropped", "interrupted", "deadline"]
"""Why a worker stops a job: the broker no longer lets it hold it, the worker is shutting
down past its grace, the job's deadline passed."""


class Snooze(Exception):
    """Raised by a job function: hand the job back to run again `seconds` later (JOB SNOOZE),
    without using a retry and without counting as a failure."""

    def __init__(self, seconds: float | timedelta) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if not 0 <= value <= MAX_SNOOZE:  # NaN too
            raise ValueError(f"a job snoozes for 0 to {MAX_SNOOZE} seconds, not {seconds!r}")
        super().__init__(f"snoozed for {value:g} s")
        self.seconds = value


class Fatal(Exception):
    """Raised by a job function: the job failed and must not be retried. The Worker FAILs it,
    then moves it from the retry set to the dead set (MUTATE kill), where it keeps its failure;
    a job pushed with `retry` 0 is discarded by the FAIL as usual."""


class JobCancelled(Exception):
    """Raised by `check_cancelled()` in a job the worker has stopped."""


class DeadlineExceeded(Exception):
    """The job ran longer than its `custom.timeout`: failed, and retried like any failure."""


class Hold:
    """A running job as its worker holds it: its cancel scope, and why it was stopped."""

    __slots__ = ("_stopped", "job", "scope", "sync", "why")

    def __init__(self, job: Job, sync: bool) -> None:
        self.job = job
        self.sync = sync  # its function runs in a thread: cancelling would abandon it
        self.scope = trio.CancelScope()
        if (seconds := deadline(job)) is not None:
            self.scope.relative_deadline = seconds
        self.why: Why | None = None
        self._stopped = threading.Event()

    def stop(self, why: Why) -> None:
        """Stop the job: cancel an async job; a sync one sees `job_cancelled()` (a thread
        that does not return is abandoned only at shutdown, past the grace)."""
        if self.why is None:
            self.why = why
        self._stopped.set()
        if not (why == "dropped" and self.sync):
            self.scope.cancel()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._stopped.wait(timeout)


_current_hold: ContextVar[Hold] = ContextVar("current_hold")


def hold_job(hold: Hold) -> None:
    """Make `hold` the current job's (in the job's task; its threads copy the context)."""
    _current_hold.set(hold)


def job_cancelled() -> bool:
    """Whether the worker has stopped the running job: the broker cancelled it or took it
    back (its reservation expired), its deadline passed, or the worker is shutting down past
    its grace. A sync job should return (or raise) soon after; False outside a job."""
    hold = _current_hold.get(None)
    return hold is not None and hold.stopped


def check_cancelled() -> None:
    """Raise JobCancelled when `job_cancelled()`; for the checkpoints of a sync job."""
    if job_cancelled():
        raise JobCancelled(f"job {_current_hold.get().job.jid} was stopped by its worker")


def wait_cancelled(timeout: float | None = None) -> bool:
    """Block this thread until the running job is stopped or `timeout` seconds pass (for sync
    jobs that wait between steps); returns `job_cancelled()`. Outside a job: False at once."""
    hold = _current_hold.get(None)
    return hold is not None and hold.wait(timeout)


def deadline(job: Job) -> float | None:
    """The seconds a job may run (`custom.timeout`), if it carries a valid one."""
    value = (job.custom or {}).get("timeout")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 and math.isfinite(value) else None
