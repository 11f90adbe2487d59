"""Building jobs to push: jids, schedule times and options, as the broker's `Job` Struct."""

import math
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, TypedDict

import msgspec

from hopper_client.schema.jobs import DEFAULT_QUEUE, Job, format_time

JID_BYTES = 12  # 16 URL-safe characters, like the Go client's jids

At = datetime | timedelta | str | None
"""When to run a job: a datetime (naive means local time), a delay, or an RFC3339 string."""


class JobOptions(TypedDict, total=False):
    """The keyword arguments of `make_job` after `jobtype` and `args`."""

    queue: str
    at: At
    retry: int | None
    reserve_for: int | None
    custom: dict[str, Any] | None
    jid: str | None
    timeout: float | timedelta | None
    priority: int | None
    group: str | None


def new_jid() -> str:
    """A random, URL-safe job id of 16 characters."""
    return secrets.token_urlsafe(JID_BYTES)


def format_at(at: At, now: float | None = None) -> str:
    """`at` as the RFC3339 text the protocol carries; "" means now."""
    if at is None or isinstance(at, str):
        return at or ""
    if isinstance(at, timedelta):
        return format_time((time.time() if now is None else now) + at.total_seconds())
    return format_time(at.timestamp())


def job_timeout(timeout: float | timedelta) -> float:
    """A job deadline in seconds: a finite number above 0 (ValueError otherwise)."""
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError(f"timeout must be a number of seconds or a timedelta, not {timeout!r}")
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"timeout must be a finite number of seconds above 0, not {timeout!r}")
    return seconds


def make_job(
    jobtype: str,
    args: Iterable[Any] = (),
    *,
    queue: str = DEFAULT_QUEUE,
    at: At = None,
    retry: int | None = None,
    reserve_for: int | None = None,
    custom: dict[str, Any] | None = None,
    jid: str | None = None,
    timeout: float | timedelta | None = None,
    priority: int | None = None,
    group: str | None = None,
    after: Iterable[str] = (),
    after_policy: str | None = None,
) -> Job:
    """A job ready to push; `retry` and `reserve_for` left as None take the server's defaults;
    `priority` 1-9 (higher first, 5 when not given) and `group` (jobs of a queue's groups take
    turns, and group limits apply to each) are Hopper extensions.

    `timeout` (seconds or a timedelta) is the job's deadline, carried as `custom.timeout`:
    the bundled Worker aborts the job once it has run that long and fails it with
    DeadlineExceeded (retried like any failure).

    `after` (Hopper, workflows) names jobs that must succeed before this one runs
    (`custom.after`); `after_policy` "fail" (the broker's default) or "run" says what a
    dependency that dies does to it. The job then finds their results with `results_of`.
    """
    if isinstance(args, str | bytes):
        raise TypeError("args must be a sequence of arguments, not a string")
    if timeout is not None:
        custom = {**(custom or {}), "timeout": job_timeout(timeout)}
    if after:
        custom = {**(custom or {}), "after": list(after)}
        if after_policy is not None:
            custom["after_policy"] = after_policy
    return Job(
        jid=jid or new_jid(),
        jobtype=jobtype,
        args=list(args),
        queue=queue,
        at=format_at(at),
        retry=retry,
        reserve_for=reserve_for or 0,
        priority=priority or 0,
        group=group or "",
        custom=custom,
    )


def results_of(job: Job) -> dict[str, Any]:
    """The ACK results of a released job's dependencies, {jid: result} (`custom._results`,
    written by the broker; a dependency that left no result says None)."""
    found = (job.custom or {}).get("_results")
    return dict(found) if isinstance(found, dict) else {}


def in_batch(job: Job, bid: str) -> Job:
    """A copy of the job that joins batch `bid` (its `custom.bid`); an empty bid: the job."""
    if not bid:
        return job
    return msgspec.structs.replace(job, custom={**(job.custom or {}), "bid": bid})
