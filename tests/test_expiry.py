"""Expiring jobs, as Faktory Enterprise defines them (custom.expires_at, custom.expires_in): an
expired job is never handed out; it ends `expired`, is counted, and the next job comes."""

import json
import time
from typing import Any

import pytest
import trio

from hopper_broker.app import App
from hopper_client.schema.jobs import parse_time
from tests.conftest import check_store, check_store_aside, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def state(w: Wire, jid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"STATE {jid}"))
    return found


async def test_an_expired_job_is_skipped_and_counted(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    past = "2020-05-01T10:00:00.123456789-07:00"  # as Go's SetExpiresAt writes it
    await w.call("PUSH", job("expired-1", custom={"expires_at": past}))
    await w.call("PUSH", job("fresh-001", custom={"expires_in": 600}))
    stored = await state(w, "fresh-001")
    assert stored["state"] == "queued"
    fetched = json.loads(await w.call("FETCH", "default"))
    assert fetched["jid"] == "fresh-001" and fetched["custom"]["expires_at"]
    gone = await state(w, "expired-1")
    assert gone["state"] == "expired" and gone["finished_at"]
    assert json.loads(await w.call("INFO"))["hopper"]["expired"] == 1
    assert await w.call("FETCH", "default") is None
    check_store(store_url)


async def test_a_retried_job_expires_before_its_next_run(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("retried-1", custom={"expires_in": 0.5}))
    fetched = json.loads(await w.call("FETCH", "default"))
    await w.call("FAIL", {"jid": "retried-1", "message": "again"})
    assert (await state(w, "retried-1"))["state"] == "retrying"
    expires_at = parse_time(fetched["custom"]["expires_at"])
    await eventually(lambda: time.time() > expires_at + 0.05)
    retries = {"cmd": "requeue", "target": "retries", "filter": {"jids": ["retried-1"]}}
    await w.call("MUTATE", retries)
    assert await w.call("FETCH", "default") is None
    assert (await state(w, "retried-1"))["state"] == "expired"
    check_store(store_url)


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"expires_at": "tomorrow"}, "custom.expires_at: not an RFC3339 timestamp"),
        ({"expires_at": 5}, "custom.expires_at: not an RFC3339 timestamp"),
        ({"expires_in": "60"}, "custom.expires_in must be a number of seconds above 0"),
        ({"expires_in": -1}, "custom.expires_in must be a number of seconds above 0"),
        ({"expires_in": 1e308}, "custom.expires_in must be a number of seconds above 0, at most"),
    ],
)
async def test_bad_expiry_is_refused(broker: App, custom: dict[str, Any], error: str) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match=error):
        await w.call("PUSH", job("expiring1", custom=custom))
    refused = json.loads(await w.call("PUSHB", [job("expiring2"), job("expiring3", custom=custom)]))
    assert list(refused) == ["expiring3"] and error in refused["expiring3"]
    assert json.loads(await w.call("JOB", "STATE expiring2"))["state"] == "queued"


async def test_no_expiry_is_left_behind_for_a_jid_used_again(broker: App, rdb: Any) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    later = "2099-01-01T00:00:00Z"
    await w.call("PUSH", job("reused-01", at=later, custom={"expires_in": 0.01}))
    discard = {"cmd": "discard", "target": "scheduled", "filter": {"jids": ["reused-01"]}}
    await w.call("MUTATE", discard)
    assert rdb.zcard("hopper:q:{default}:expiring") == 0
    await w.call("PUSH", job("reused-01"))  # a new job, without an expiry
    assert json.loads(await w.call("FETCH", "default"))["jid"] == "reused-01"


async def test_a_dead_job_requeued_after_its_expiry_is_not_handed_out(
    broker: App, store_url: str
) -> None:
    """A job that died keeps no expiry entry (it does not expire in the dead set); requeued by
    MUTATE after its time, it ends `expired` at the FETCH that takes it, as any other."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("e-expiring-1", retry=-1, custom={"expires_in": 1}))
    got = json.loads(await w.call("FETCH", "default"))
    await w.call("FAIL", {"jid": got["jid"], "message": "boom"})
    assert (await state(w, "e-expiring-1"))["state"] == "dead"
    await trio.sleep(1.2)  # its expires_at passes while it is dead
    requeue = {"cmd": "requeue", "target": "dead", "filter": {"jids": ["e-expiring-1"]}}
    await w.call("MUTATE", requeue)
    handed = await w.call("FETCH", "default")
    assert handed is None, json.loads(handed)["jid"]
    assert (await state(w, "e-expiring-1"))["state"] == "expired"
    await check_store_aside(store_url)
