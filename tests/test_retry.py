"""The pure retry policy."""

import random

import pytest

from hopper_broker import retry
from hopper_client.schema.jobs import FailPayload, Job, parse_time

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

NOW = 1_764_000_000.0
TTL = 180 * 86400.0


def test_backoff_bounds() -> None:
    rng = random.Random(1)
    for count in range(30):
        for _ in range(20):
            seconds = retry.backoff(count, rng)
            assert count**4 + 15 <= seconds <= count**4 + 15 + 29 * (count + 1)


def test_first_failure_is_cleansed() -> None:
    job = Job(jid="12345678", jobtype="a", args=[], retry=3)
    report = FailPayload(
        jid="12345678", errtype="  E" * 100, message="", backtrace=[str(i) for i in range(80)]
    )
    failure = retry.record_failure(job, report, NOW)
    assert failure.retry_count == 0 and failure.remaining == 3
    assert len(failure.errtype) == 100 and failure.errtype == failure.errtype.strip()
    assert failure.message == "unknown"
    assert failure.backtrace == [str(i) for i in range(50)]
    assert parse_time(failure.failed_at) == NOW


def test_later_failures_count_up_and_keep_first_time() -> None:
    job = Job(jid="12345678", jobtype="a", args=[], retry=2)
    retry.record_failure(job, FailPayload(errtype="A", message="one"), NOW)
    failure = retry.record_failure(job, FailPayload(errtype="B", message="two"), NOW + 100)
    assert (failure.retry_count, failure.remaining, failure.errtype, failure.message) == (
        1,
        1,
        "B",
        "two",
    )
    assert parse_time(failure.failed_at) == NOW


@pytest.mark.parametrize(
    ("retries", "failures", "target"),
    [
        (0, 1, retry.DROP),
        (-1, 1, retry.DEAD),
        (1, 1, retry.RETRY),
        (1, 2, retry.DEAD),
        (25, 25, retry.RETRY),
        (25, 26, retry.DEAD),
        (None, 1, retry.RETRY),
    ],
)
def test_next_step(retries: int | None, failures: int, target: str) -> None:
    job = Job(jid="12345678", jobtype="a", args=[], retry=retries)
    rng = random.Random(7)
    for _ in range(failures):
        retry.record_failure(job, FailPayload(errtype="E", message="m"), NOW)
    step, score = retry.next_step(job, NOW, rng, TTL)
    assert step == target
    if target == retry.RETRY:
        assert job.failure is not None
        assert score >= NOW + 15 and parse_time(job.failure.next_at) == pytest.approx(score)
    if target == retry.DEAD:
        assert score == NOW + TTL
