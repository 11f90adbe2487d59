"""Pure retry policy: failure cleansing, backoff and the retry-or-dead decision."""

import random

from hopper_broker.policy import MAX_BACKOFF, backoff_of
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import DEFAULT_RETRY, FailPayload, Failure, Job, format_time

MAX_ERRTYPE = 100  # characters kept of a failure's errtype (reference limit)
MAX_MESSAGE = 1000  # characters kept of a failure's message (reference limit)
MAX_BACKTRACE = 50  # lines kept of a failure's backtrace (reference limit)

MAX_DELAY = MAX_BACKOFF  # seconds: no retry is scheduled further out (a client may send any count)
MAX_COUNT = 1_000  # failure counts above this all get MAX_DELAY (1000**4 s is far beyond it)

RETRY = "retries"
DEAD = "dead"
DROP = ""


def backoff(count: int, rng: random.Random) -> int:
    """Seconds until the next attempt after failure number `count` (0-based), as Sidekiq does,
    never more than MAX_DELAY."""
    count = min(max(count, 0), MAX_COUNT)
    return min(count**4 + 15 + rng.randrange(30) * (count + 1), MAX_DELAY)


def delay(job: Job, count: int, rng: random.Random) -> float:
    """Seconds until the next attempt: the job's own policy (custom.backoff), else the
    reference's curve (also for a policy that no longer parses)."""
    try:
        policy = backoff_of(job)
    except CommandError:
        policy = None
    return backoff(count, rng) if policy is None else policy.seconds(count, rng)


def record_failure(job: Job, report: FailPayload, now: float) -> Failure:
    """Update `job.failure` with a cleansed report; `failed_at` keeps the first failure's time."""
    errtype = report.errtype.strip()[:MAX_ERRTYPE] or "unknown"
    message = report.message.strip()[:MAX_MESSAGE] or "unknown"
    backtrace = (report.backtrace or [])[:MAX_BACKTRACE]
    previous = job.failure
    retry = DEFAULT_RETRY if job.retry is None else job.retry
    if previous is None:
        failure = Failure(0, retry, format_time(now), message, errtype, "", backtrace)
    else:
        failure = Failure(
            previous.retry_count + 1,
            max(previous.remaining - 1, 0),
            previous.failed_at,
            message,
            errtype,
            "",
            backtrace,
        )
    job.failure = failure
    return failure


def next_step(job: Job, now: float, rng: random.Random, dead_ttl: float) -> tuple[str, float]:
    """Where a just-failed job goes, and its score there: (RETRY | DEAD | DROP, unix seconds)."""
    assert job.failure is not None
    retry = DEFAULT_RETRY if job.retry is None else job.retry
    if retry == 0:
        return DROP, 0.0
    if job.failure.retry_count < retry:
        at = now + delay(job, job.failure.retry_count, rng)
        job.failure.next_at = format_time(at)
        return RETRY, at
    return DEAD, now + dead_ttl
