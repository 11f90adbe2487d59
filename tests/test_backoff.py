"""Retry policy per job (custom.backoff): each kind's delays, validation at push, and the
broker applying it to a failed job."""

import json
import random
import time
from typing import Any

import msgspec
import pytest

from hopper_broker.app import App
from hopper_broker.policy import Backoff
from hopper_client.schema.jobs import parse_time
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


@pytest.mark.parametrize(
    ("spec", "delays"),
    [
        ({"kind": "fixed", "delay": 30}, [30, 30, 30]),
        ({"kind": "linear", "delay": 10}, [10, 20, 30]),
        ({"kind": "exponential", "delay": 5, "factor": 3, "max": 100}, [5, 15, 45, 100]),
        ({"kind": "list", "delays": [1, 60, 600]}, [1, 60, 600, 600]),
    ],
)
def test_each_kind_gives_its_delays(spec: dict[str, Any], delays: list[float]) -> None:
    policy = msgspec.convert(spec, Backoff)
    assert [policy.seconds(n, random.Random(1)) for n in range(len(delays))] == delays


def test_jitter_only_shortens() -> None:
    policy = Backoff("fixed", delay=100, jitter=0.5)
    rng = random.Random(7)
    seen = [policy.seconds(0, rng) for _ in range(200)]
    assert min(seen) >= 50 and max(seen) <= 100 and len(set(seen)) > 100


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"kind": "sometimes"}, "kind must be one of fixed, linear, exponential, list"),
        ({"kind": "fixed", "delay": -1}, "delays must be between 0 and"),
        ({"kind": "exponential", "delay": 1, "factor": 0.5}, "factor must be between 1 and"),
        ({"kind": "fixed", "jitter": 2}, "jitter must be between 0 and 1"),
        ({"kind": "list"}, "a list needs 1 to 1000 delays"),
        ({"kind": "fixed", "every": 3}, "custom.backoff: Object contains unknown field"),
        ("fast", "custom.backoff: Expected `object`"),
    ],
)
async def test_a_malformed_policy_is_refused_at_push(broker: App, spec: Any, error: str) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match=error):
        await w.call("PUSH", job("backoff-1", custom={"backoff": spec}))


async def test_the_broker_schedules_the_retry_by_the_job_s_policy(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("backoff-1", custom={"backoff": {"kind": "fixed", "delay": 3600}}))
    await w.call("FETCH", "default")
    before = time.time()
    await w.call("FAIL", {"jid": "backoff-1", "message": "later"})
    found = json.loads(await w.call("JOB", "STATE backoff-1"))
    assert found["state"] == "retrying"
    assert 3590 <= parse_time(found["next_at"]) - before <= 3610
