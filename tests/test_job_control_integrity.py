"""Integrity review: orders of events that once stranded or lost a job, each shown over the wire
with a real broker and Redis, then checked by `hopper check` (check_store)."""

import json
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import redis
import trio

from chaos.marks import CHAOS
from hopper_broker.app import App
from hopper_broker.errors import Halt
from hopper_broker.middleware import Chains, Context, Next
from hopper_broker.mutate import COMMANDS, TARGETS
from hopper_broker.store.audit import Auditor
from hopper_broker.store.keys import WF_DUE, QueueKeys
from hopper_broker.store.keys import worker as worker_key
from hopper_client.schema.jobs import format_time
from tests.conftest import BrokerProcess, StartBroker, check_store_aside, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


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


async def settled(w: Wire, jid: str, queue: str, policy: str) -> None:
    """The dependant `jid`, whose dependency ended without success, applies its policy: "fail"
    cancels it, "run" hands it out (it is then ACKed)."""
    if policy == "fail":
        await eventually(lambda: _is(w, jid, "cancelled"), 5)
    else:
        released = await eventually(lambda: w.call("FETCH", queue), 5)
        assert json.loads(released)["jid"] == jid
        await w.call("ACK", {"jid": jid})


@pytest.mark.parametrize("policy", ["fail", "run"])
async def test_a_dependency_killed_by_mutate_settles_its_dependants(
    broker: App, store_url: str, policy: str
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
    await settled(w, "jobs-next-1", "default", policy)
    await check_store_aside(store_url)


async def test_a_batch_job_killed_by_mutate_counts_as_failed(broker: App, store_url: str) -> None:
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
    await check_store_aside(store_url)


async def test_a_flush_stopped_midway_leaves_no_stray_wait(broker: App, store_url: str) -> None:
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
    await check_store_aside(store_url)


@pytest.mark.parametrize("policy", ["fail", "run"])
async def test_a_dependency_flushed_away_settles_its_dependants(
    broker: App, store_url: str, policy: str
) -> None:
    """FLUSH goes queue by queue: a dependant pushed into a queue already flushed, after a job
    of a queue flushed next, is not left blocked on a job that no longer exists."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-root-2", queue="first"))
    await w.call("PUSH", {**after("jobs-late-2", ["jobs-root-2"], policy), "queue": "second"})
    assert await broker.manager.store.queues.flush("first", 1000) == 0  # FLUSH's step for it
    await settled(w, "jobs-late-2", "second", policy)
    await check_store_aside(store_url)


async def test_a_dependant_pushed_during_a_flush_is_not_left_blocked(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis, store_url: str
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
    await check_store_aside(store_url)


async def _alive(w: Wire) -> bool:
    try:
        await w.call("INFO")
    except (EOFError, trio.BrokenResourceError):
        return False
    return True


async def test_a_silent_worker_s_connection_on_another_broker_loses_its_jobs(
    start_broker: StartBroker, rdb: redis.Redis, store_url: str
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
    await check_store_aside(store_url)


async def test_a_job_cancelled_while_fetch_middleware_runs_is_not_handed_back(
    start_broker: StartBroker, store_url: str
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
    await check_store_aside(store_url)


async def test_hopper_check_sees_a_blocked_job_no_end_will_come_to(
    broker: App, store_url: str, rdb: redis.Redis
) -> None:
    """A blocked job whose dependency no longer names it (what a FLUSH left) is reported;
    --repair marks its end due and the job's policy settles it."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-dep-5", queue="other"))
    await w.call("PUSH", after("jobs-wait-5", ["jobs-dep-5"]))
    await w.call("PUSH", after("jobs-fine-5", ["jobs-dep-5"], "run"))
    await check_store_aside(store_url)  # a blocked job that a live dependency names is in order
    rdb.hset(QueueKeys("other").dependants, "jobs-dep-5", '["default","jobs-fine-5"]')
    found = await Auditor(broker.manager.store).run()
    assert [(p.kind, p.queue, p.jid) for p in found.problems] == [
        ("blocked for good", "default", "jobs-wait-5")
    ]
    repaired = await Auditor(broker.manager.store, repair=True).run()
    assert repaired.clean and len(repaired.problems) == 1
    await eventually(lambda: _is(w, "jobs-wait-5", "cancelled"), 5)
    assert await state(w, "jobs-fine-5") == "blocked"  # its dependency still runs
    await check_store_aside(store_url)


GONE = (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, ConnectionResetError)


class Mix:
    """A random mix of job control over two brokers: workflows, batches, MUTATE, JOB CANCEL,
    QUEUE REMOVE and PAUSE, snoozes, workers that go (never beating: forgotten, their jobs
    failed), short reservations."""

    QUEUES = ("qa", "qb")

    def __init__(self, brokers: list[App], rnd: random.Random) -> None:
        self.brokers, self.rnd = brokers, rnd
        self.conns: list[Wire] = []
        self.held: dict[str, Wire] = {}  # jid -> the connection that fetched it
        self.pushed: list[str] = []
        self.bids: list[str] = []

    async def connect(self, wid: str) -> Wire:
        return await Wire.open(self.rnd.choice(self.brokers).port, hello={"wid": wid})

    async def push(self, w: Wire, n: int) -> None:
        rnd, custom = self.rnd, {}
        fields: dict[str, Any] = {"queue": rnd.choice(self.QUEUES), "retry": rnd.choice([0, 0, 1])}
        if self.pushed and rnd.random() < 0.4:
            custom["after"] = rnd.sample(self.pushed[-20:], min(len(self.pushed), 2))
            custom["after_policy"] = rnd.choice(["fail", "run"])
        if self.bids and rnd.random() < 0.2:
            custom["bid"] = rnd.choice(self.bids)
        if rnd.random() < 0.15:
            fields["at"] = format_time(time.time() + 1)
        if rnd.random() < 0.2:
            fields["reserve_for"] = 1
        await w.call("PUSH", job(f"jobs-mix-{n}", custom=custom or None, **fields))
        self.pushed.append(f"jobs-mix-{n}")

    async def step(self, w: Wire, n: int) -> None:
        rnd, op = self.rnd, self.rnd.random()
        if op < 0.3:
            await self.push(w, n)
        elif op < 0.33:
            spec = {"complete": job(f"jobs-cb-{n}", "Callback", queue="qa")}
            self.bids.append((await w.call("BATCH", "NEW " + json.dumps(spec))).decode())
        elif op < 0.35 and self.bids:
            await w.call("BATCH", f"COMMIT {rnd.choice(self.bids)}")
        elif op < 0.55:
            found = await w.call("FETCH", " ".join(self.QUEUES))
            if found is not None:
                self.held[json.loads(found)["jid"]] = w
        elif op < 0.8 and self.held:
            jid = rnd.choice(sorted(self.held))
            verb = rnd.choice(["ACK", "ACK", "FAIL"])
            await self.held.pop(jid).call(verb, {"jid": jid, "message": "boom"})
        elif op < 0.86 and self.pushed:
            await w.call("JOB", f"CANCEL {rnd.choice(self.pushed)}")
        elif op < 0.93 and self.pushed:
            jids = rnd.sample(self.pushed, min(3, len(self.pushed)))
            cmd, target = rnd.choice(COMMANDS), rnd.choice(TARGETS)
            await w.call("MUTATE", {"cmd": cmd, "target": target, "filter": {"jids": jids}})
        elif op < 0.95:
            await w.call("QUEUE", f"{rnd.choice(['REMOVE', 'PAUSE', 'RESUME'])} qa qb")
        elif op < 0.97 and self.held:
            jid = rnd.choice(sorted(self.held))
            await self.held.pop(jid).call("JOB", f"SNOOZE {jid} 0")
        elif op < 0.98:
            i = rnd.randrange(len(self.conns))
            await self.replace(i, f"w-{n}")
        else:
            await trio.sleep(0.02)

    async def replace(self, i: int, wid: str) -> None:
        """Close connection i (its worker goes, holding what it fetched) for a new worker."""
        old = self.conns[i]
        self.held = {jid: w for jid, w in self.held.items() if w is not old}
        await old.aclose()
        self.conns[i] = await self.connect(wid)

    async def run(self, steps: int) -> None:
        self.conns = [await self.connect(f"w-start-{i}") for i in range(4)]
        for n in range(steps):
            i = self.rnd.randrange(len(self.conns))
            try:
                await self.step(self.conns[i], n)
            except WireError:
                pass  # refused: a dependency that did not succeed, a job not held, ...
            except GONE:  # a worker forgotten for not beating: its connection was closed
                await self.replace(i, f"w-again-{n}")


# seed 0 in every store mode; the long seeds (make chaos) on one Redis and on the rig
MIXES = [
    *(pytest.param(mode, 0, id=f"{mode}-0") for mode in ("one", "split", "cluster")),
    *(
        pytest.param(mode, seed, id=f"{mode}-chaos-{seed}", marks=CHAOS)
        for mode in ("one", "cluster")
        for seed in range(1, 9)
    ),
]


@pytest.mark.parametrize(("store_mode", "seed"), MIXES, indirect=["store_mode"])
async def test_a_random_mix_of_job_control_strands_nothing(
    start_broker: StartBroker, rdb: redis.Redis, store_url: str, seed: int
) -> None:
    """After the mix, every batch committed and every job run to its end: no job stays
    blocked, every batch is complete, and hopper check finds nothing."""
    timing = {"fetch_timeout": 0.05, "min_reservation": 1, "reaper_interval": 0.2}
    timing |= {"worker_ttl": 0.5, "worker_reaper_interval": 0.2, "scheduler_interval": 0.2}
    mix = Mix([await start_broker(**timing), await start_broker(**timing)], random.Random(seed))
    await mix.run(300)
    admin = await Wire.open(mix.brokers[0].port, hello={})
    for bid in mix.bids:
        await admin.call("BATCH", f"COMMIT {bid}")
    await admin.call("QUEUE", "RESUME qa qb")
    with trio.fail_after(30):  # run what is left, what comes back and what is released
        idle = 0
        while idle < 5:
            for target in ("retries", "scheduled"):
                await admin.call("MUTATE", {"cmd": "requeue", "target": target})
            found = await admin.call("FETCH", "qa qb")
            if found is not None:
                await admin.call("ACK", {"jid": json.loads(found)["jid"]})
            working = sum(rdb.zcard(QueueKeys(q).working) for q in Mix.QUEUES)
            idle = 0 if found or working or rdb.zcard(WF_DUE) else idle + 1
            await trio.sleep(0.02 if found else 0.1)
    assert [rdb.zcard(QueueKeys(q).blocked) for q in Mix.QUEUES] == [0, 0]
    for bid in mix.bids:
        found = json.loads(await admin.call("BATCH", f"STATUS {bid}"))
        assert found["complete_st"] != "", found
    await check_store_aside(store_url)
