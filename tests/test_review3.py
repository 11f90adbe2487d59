"""Integrity review: orders of events that once stranded or lost a job, each shown over the wire
with a real broker and Redis, then checked by `hopper check` (check_store)."""

import json
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.errors import Halt
from hopper_broker.middleware import Chains, Context, Next
from hopper_broker.store.audit import Auditor
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.keys import worker as worker_key
from tests.conftest import BrokerProcess, StartBroker, check_store, eventually
from tests.wire import Wire, WireError, job


def after(jid: str, deps: list[str], policy: str = "") -> dict[str, Any]:
    custom: dict[str, Any] = {"after": deps}
    if policy:
        custom["after_policy"] = policy
    return job(jid, custom=custom)


async def state(w: Wire, jid: str) -> str:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"STATE {jid}"))
    return str(found["state"])


async def _is(w: Wire, jid: str, wanted: str) -> bool:
    return await state(w, jid) == wanted


@pytest.mark.parametrize("policy", ["fail", "run"])
async def test_a_dependency_killed_by_mutate_settles_its_dependants(
    broker: App, redis_url: str, policy: str
) -> None:
    """MUTATE kill is a death like a last FAIL: the dependants apply their policy at once."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-dep-1", retry=5))
    await w.call("PUSH", after("jobs-next-1", ["jobs-dep-1"], policy))
    got = json.loads(await w.call("FETCH", "default"))
    await w.call("FAIL", {"jid": got["jid"], "message": "boom"})  # to retries
    assert await state(w, "jobs-dep-1") == "retrying"
    kill = {"cmd": "kill", "target": "retries", "filter": {"jids": ["jobs-dep-1"]}}
    await w.call("MUTATE", kill)
    assert await state(w, "jobs-dep-1") == "dead"
    if policy == "fail":
        await eventually(lambda: _is(w, "jobs-next-1", "cancelled"), 5)
    else:
        released = await eventually(lambda: w.call("FETCH", "default"), 5)
        assert json.loads(released)["jid"] == "jobs-next-1"
        await w.call("ACK", {"jid": "jobs-next-1"})
    check_store(redis_url)


async def test_a_batch_job_killed_by_mutate_counts_as_failed(broker: App, redis_url: str) -> None:
    """A job of a batch killed before it ran (MUTATE kill of a scheduled job) dies like one
    that failed for good: the batch is complete, its callback is pushed."""
    w = await Wire.open(broker.port, hello={})
    spec = {"complete": job("complete-cb-1", "Done", queue="cbs")}
    bid = (await w.call("BATCH", "NEW " + json.dumps(spec))).decode()
    await w.call("PUSH", job("jobs-later-1", custom={"bid": bid}, at="2099-01-01T00:00:00Z"))
    await w.call("BATCH", f"COMMIT {bid}")
    kill = {"cmd": "kill", "target": "scheduled", "filter": {"jids": ["jobs-later-1"]}}
    await w.call("MUTATE", kill)
    assert await state(w, "jobs-later-1") == "dead"
    callback = await eventually(lambda: w.call("FETCH", "cbs"), 5)
    assert json.loads(callback)["jid"] == "complete-cb-1"
    await w.call("ACK", {"jid": "complete-cb-1"})
    check_store(redis_url)


async def test_a_flush_stopped_midway_leaves_no_stray_wait(broker: App, redis_url: str) -> None:
    """A FLUSH that stops after one batch (its broker killed, or jobs pushed meanwhile) has
    deleted a blocked job whole: when the dependency ends, no finished entry appears for it and
    the other dependant is still settled."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-root-1", queue="other"))
    await w.call("PUSH", after("jobs-b-1", ["jobs-root-1"]))
    await w.call("PUSH", after("jobs-b-2", ["jobs-root-1"]))
    assert await broker.manager.store.queues.flush("default", 1) == 1  # one batch of one job
    gone = "jobs-b-1" if await state(w, "jobs-b-2") == "blocked" else "jobs-b-2"
    kept = "jobs-b-2" if gone == "jobs-b-1" else "jobs-b-1"
    await w.call("JOB", "CANCEL jobs-root-1")
    await eventually(lambda: _is(w, kept, "cancelled"), 5)
    assert await state(w, gone) == "unknown"
    check_store(redis_url)


@pytest.mark.parametrize("policy", ["fail", "run"])
async def test_a_dependency_flushed_away_settles_its_dependants(
    broker: App, redis_url: str, policy: str
) -> None:
    """FLUSH goes queue by queue: a dependant pushed into a queue already flushed, after a job
    of a queue flushed next, is not left blocked on a job that no longer exists."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-root-2", queue="first"))
    await w.call("PUSH", {**after("jobs-late-2", ["jobs-root-2"], policy), "queue": "second"})
    assert await broker.manager.store.queues.flush("first", 1000) == 0  # FLUSH's step for it
    if policy == "fail":
        await eventually(lambda: _is(w, "jobs-late-2", "cancelled"), 5)
    else:
        released = await eventually(lambda: w.call("FETCH", "second"), 5)
        assert json.loads(released)["jid"] == "jobs-late-2"
        await w.call("ACK", {"jid": "jobs-late-2"})
    check_store(redis_url)


async def test_a_dependant_pushed_during_a_flush_is_not_left_blocked(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis, redis_url: str
) -> None:
    """The whole FLUSH: a dependant pushed into a queue it already flushed, after a job of a
    queue it flushes later, is settled once that job goes (the end marked due outlives the
    FLUSH)."""
    process = broker_process("--scheduler-interval", "1")
    w = await Wire.open(process.port, hello={})
    for attempt in range(5):  # FLUSH runs a, b, z in turn: push while it is at b
        await w.call("PUSH", job(f"jobs-first-{attempt}", queue="a"))
        await w.call("PUSH", job(f"jobs-root-{attempt}", queue="z"))
        for n in range(10):  # queue b keeps the FLUSH busy between a and z
            await w.call("PUSHB", [job(f"jobs-b-{n}-{i}", queue="b") for i in range(1000)])
        flusher = await Wire.open(process.port, hello={})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flusher.call, "FLUSH")
            with trio.fail_after(5):
                while rdb.exists(QueueKeys("a").jobs):
                    await trio.sleep(0.001)
            late = after(f"jobs-late-{attempt}", [f"jobs-root-{attempt}"]) | {"queue": "a"}
            try:
                await w.call("PUSH", late)
            except WireError:  # too late: FLUSH was at z already
                continue
        await eventually(partial(_is, w, late["jid"], "cancelled"), 5)
        break
    else:
        pytest.fail("no push landed while FLUSH was at queue b")
    check_store(redis_url)


async def _alive(w: Wire) -> bool:
    try:
        await w.call("INFO")
    except (EOFError, trio.BrokenResourceError):
        return False
    return True


async def test_a_silent_worker_s_connection_on_another_broker_loses_its_jobs(
    start_broker: StartBroker, rdb: redis.Redis, redis_url: str
) -> None:
    """A worker that never beats is forgotten by one broker, which closes its connections
    there; what its connection on another broker fetches after that is failed worker_ttl
    later (WorkerLost), not held until the reservation ends (30 minutes)."""
    timing = {"worker_ttl": 0.5, "worker_reaper_interval": 0.1}
    brokers = [await start_broker(**timing), await start_broker(**timing)]
    hello = {"wid": "silent-1"}
    conns = [await Wire.open(b.port, hello=hello) for b in brokers]
    await eventually(lambda: not rdb.exists(worker_key("silent-1")), 5)
    survivors = [w for w in conns if await _alive(w)]
    assert len(survivors) == 1  # the broker that forgot it closed its connection there
    await survivors[0].call("PUSH", job("jobs-held-1"))
    assert json.loads(await survivors[0].call("FETCH", "default"))["jid"] == "jobs-held-1"
    await eventually(lambda: _is(survivors[0], "jobs-held-1", "retrying"), 5)
    check_store(redis_url)


async def test_a_job_cancelled_while_fetch_middleware_runs_is_not_handed_back(
    start_broker: StartBroker, redis_url: str
) -> None:
    """JOB CANCEL of a job reserved while the fetch chain runs, which then halts: the
    reservation ends other than by ACK, so the job ends cancelled instead of going back in line
    (release.lua)."""
    reached, go = trio.Event(), trio.Event()

    async def slow_refusal(ctx: Context, next_: Next) -> None:
        reached.set()
        await go.wait()
        raise Halt("DENIED", "not now")

    chains = Chains()
    chains.fetch.add(slow_refusal)
    broker = await start_broker(chains)
    w = await Wire.open(broker.port, hello={"wid": "w-halted-1"})
    admin = await Wire.open(broker.port, hello={})
    await admin.call("PUSH", job("jobs-halted-1"))
    async with trio.open_nursery() as nursery:

        async def fetch() -> None:
            with pytest.raises(WireError, match="DENIED"):
                await w.call("FETCH", "default")

        nursery.start_soon(fetch)
        await reached.wait()
        assert await state(admin, "jobs-halted-1") == "working"
        await admin.call("JOB", "CANCEL jobs-halted-1")
        go.set()
    assert await state(admin, "jobs-halted-1") == "cancelled"
    check_store(redis_url)


async def test_hopper_check_sees_a_blocked_job_no_end_will_come_to(
    broker: App, redis_url: str, rdb: redis.Redis
) -> None:
    """A blocked job whose dependency no longer names it (what a FLUSH left) is reported;
    --repair marks its end due and the job's policy settles it."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-dep-5", queue="other"))
    await w.call("PUSH", after("jobs-wait-5", ["jobs-dep-5"]))
    await w.call("PUSH", after("jobs-fine-5", ["jobs-dep-5"], "run"))
    check_store(redis_url)  # a blocked job that a live dependency names is in order
    rdb.hset(QueueKeys("other").dependants, "jobs-dep-5", '["default","jobs-fine-5"]')
    found = await Auditor(broker.manager.store).run()
    assert [(p.kind, p.queue, p.jid) for p in found.problems] == [
        ("blocked for good", "default", "jobs-wait-5")
    ]
    repaired = await Auditor(broker.manager.store, repair=True).run()
    assert repaired.clean and len(repaired.problems) == 1
    await eventually(lambda: _is(w, "jobs-wait-5", "cancelled"), 5)
    assert await state(w, "jobs-fine-5") == "blocked"  # its dependency still runs
    check_store(redis_url)
