"""Lanes at their edges (found by review): a ready job is never stuck behind many held-back
lanes or jobs, limit changes apply at once, repairs keep jobs in their lanes, lane bookkeeping
never drifts; and a random mix of every lane operation leaves nothing behind."""

import json
import random
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
import trio

from chaos.marks import CHAOS
from hopper_broker.app import App
from hopper_broker.store.keys import JIDS, QueueKeys
from tests.conftest import StartBroker, check_store
from tests.test_fairness import fetch_jids, grouped
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


@pytest.mark.parametrize(
    ("queue", "limit", "cleared", "make"),
    [
        ("fair", "group_rate=0.001", "group_rate=0", lambda i: grouped(f"a-{i:06d}", "a")),
        (
            "api",
            "Call.rate=0.001",
            "Call.rate=500",
            lambda i: job(f"c-{i:06d}", "Call", queue="api"),
        ),
    ],
    ids=["group", "jobtype"],
)
async def test_a_changed_limit_applies_to_a_resting_lane_at_once(
    broker: App, queue: str, limit: str, cleared: str, make: Any
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", f"SET {queue} {limit}")  # one job per 1000 s
    await w.call("PUSHB", [make(i) for i in range(2)])
    assert len(await fetch_jids(w, queue, 1)) == 1
    assert await fetch_jids(w, queue, 1) == []  # held back: its lane rests
    await w.call("QUEUE", f"SET {queue} {cleared}")
    assert len(await fetch_jids(w, queue, 1)) == 1


async def test_a_fast_job_behind_many_held_back_slow_ones_is_served_at_once(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET mixed Slow.concurrency=1")
    await w.call("PUSH", job("slow-first", "Slow", queue="mixed"))
    assert await fetch_jids(w, "mixed", 1) == ["slow-first"]  # Slow is at its limit
    await w.call("PUSHB", [job(f"slow-{i:05d}", "Slow", queue="mixed") for i in range(300)])
    await w.call("PUSH", job("fast-00001", "Fast", queue="mixed"))
    assert await fetch_jids(w, "mixed", 1) == ["fast-00001"]  # one FETCH, within its wait


async def test_a_free_group_behind_many_groups_at_their_limit_is_served_at_once(
    broker: App,
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET fair group_concurrency=1")
    await w.call("PUSHB", [grouped(f"one-{g:05d}", f"g{g}") for g in range(300)])
    assert len(await fetch_jids(w, "fair", 300)) == 300  # every group at its limit
    await w.call("PUSHB", [grouped(f"two-{g:05d}", f"g{g}") for g in range(300)])
    await w.call("PUSH", grouped("fresh-0001", "fresh"))
    assert await fetch_jids(w, "fair", 1) == ["fresh-0001"]


async def test_a_renamed_job_keeps_its_lane_and_gives_back_its_slot(
    broker: App, rdb: redis.Redis
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET fair group_concurrency=1")
    await w.call("PUSHB", [grouped(f"dup-{i:05d}", "x") for i in range(2)])
    assert await fetch_jids(w, "fair", 1) == ["dup-00000"]
    reserved = await broker.manager.store.jobs.rename("fair", "dup-00000")  # as check --repair
    waiting = await broker.manager.store.jobs.rename("fair", "dup-00001")
    await w.call("ACK", {"jid": reserved})
    assert rdb.hgetall(QueueKeys("fair").running) == {}
    assert await fetch_jids(w, "fair", 1) == [waiting]  # (the old jids' index entries stay:
    # rename is for a jid live in two queues, whose index entry names the other job)


async def test_check_repair_leaves_a_job_in_its_jobtype_lane(
    broker: App, rdb: redis.Redis, store_url: str
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET mixed Slow.concurrency=1")
    await w.call("PUSHB", [job(f"slow-{i:05d}", "Slow", queue="mixed") for i in range(3)])
    assert await fetch_jids(w, "mixed", 2) == ["slow-00000"]  # the others wait in t:Slow
    k = QueueKeys("mixed")
    assert rdb.zrange(k.lane("t:Slow"), 0, -1) == ["slow-00001", "slow-00002"]
    rdb.hdel(JIDS, "slow-00001")  # a reason for the check to look at the job closely
    done = subprocess.run(
        [sys.executable, "-m", "hopper_broker", "check", "--repair", "--redis-url", store_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "no index" in done.stdout and "no place" not in done.stdout, done.stdout
    assert rdb.llen(k.queue) == 0  # not copied into the list: it would run twice
    check_store(store_url)


async def test_a_namespaced_jobtype_is_limited_as_itself(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    fanout = "App\\Jobs\\Fanout"  # its args name another jobtype
    await w.call("QUEUE", f"SET q {fanout}.concurrency=1")
    args = [{"jobtype": "Mail", "to": "x"}]
    await w.call("PUSHB", [job(f"fan-{i:06d}", fanout, queue="q", args=args) for i in range(3)])
    assert len(await fetch_jids(w, "q", 3)) == 1


async def test_an_expired_job_does_not_hold_its_group_back(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET fair group_concurrency=1")
    await w.call("PUSH", job("gone-00001", queue="fair", custom={"group": "x", "expires_in": 0.05}))
    await w.call("PUSH", grouped("next-00001", "x"))
    await trio.sleep(0.1)  # the first one expires
    assert await fetch_jids(w, "fair", 1) == ["next-00001"]


async def test_buckets_of_groups_that_are_gone_are_forgotten(broker: App, rdb: redis.Redis) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET fair group_rate=1000 group_burst=5")
    await w.call("PUSH", job("plain-0001", queue="fair"))  # the queue never empties
    await w.call("PUSHB", [grouped(f"once-{g:05d}", f"user{g}") for g in range(500)])
    for jid in await fetch_jids(w, "fair", 501):
        await w.call("ACK", {"jid": jid})
    assert rdb.hlen(QueueKeys("fair").buckets) < 50


async def test_queue_set_needs_a_setting(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match="needs at least one"):
        await w.call("QUEUE", "SET fair")


@pytest.mark.parametrize(
    "seed", [0, *(pytest.param(seed, id=f"chaos-{seed}", marks=CHAOS) for seed in range(1, 9))]
)
async def test_a_random_mix_of_lane_operations_leaves_nothing_behind(
    start_broker: StartBroker, rdb: redis.Redis, store_url: str, seed: int
) -> None:
    # An empty FETCH answers after 0.1 s instead of 0.5: the mix and its drain wait on them.
    broker = await start_broker(fetch_timeout=0.1)
    rnd = random.Random(seed)
    admin = await Wire.open(broker.port, hello={})
    await admin.call(
        "QUEUE",
        "SET fz group_concurrency=2 group_rate=300 group_burst=3 Slow.concurrency=1 "
        "worker_concurrency=4 Fast.rate=400",
    )
    workers = [await Wire.open(broker.port, hello={"wid": f"w{i}"}) for i in range(3)]
    held: dict[str, Wire] = {}
    pushed: list[str] = []
    for n in range(500):
        op = rnd.random()
        if op < 0.35:
            jid, fields, custom = f"j-{n:06d}", {"queue": "fz"}, {}
            if rnd.random() < 0.7:
                custom["group"] = f"g{rnd.randrange(6)}"
            if rnd.random() < 0.3:
                fields["priority"] = rnd.randrange(1, 10)
            if rnd.random() < 0.1:
                custom["expires_in"] = 0.05
            if rnd.random() < 0.15:
                custom.update(unique_for=60, unique_until="replace")
                fields["args"] = [rnd.randrange(3)]
            try:
                await admin.call(
                    "PUSH", job(jid, rnd.choice(["Slow", "Fast", "Other"]), custom=custom, **fields)
                )
                pushed.append(jid)
            except WireError:
                pass  # not unique
        elif op < 0.6:
            w = rnd.choice(workers)
            reply = await w.call("FETCH", "fz")
            if reply is not None:
                held[json.loads(reply)["jid"]] = w
        elif op < 0.9 and held:
            jid = rnd.choice(sorted(held))
            w = held.pop(jid)
            action = rnd.choice(["ack", "fail", "release", "snooze"])
            if action == "ack":
                await w.call("ACK", {"jid": jid})
            elif action == "fail":
                await w.call("FAIL", {"jid": jid, "message": "x"})
            elif action == "release":  # as a halted fetch chain does (Manager._release)
                jobs, wid = broker.manager.store.jobs, f"w{workers.index(w)}"
                if await jobs.release("fz", jid) == 2:  # cancelled meanwhile: it ends
                    await jobs.drop("fz", jid, time.time(), broker.manager.kept(), wid)
            else:
                await w.call("JOB", f"SNOOZE {jid} 0")
        elif op < 0.95 and pushed:
            await admin.call("JOB", f"CANCEL {rnd.choice(pushed)}")
        else:
            await trio.sleep(0.01)
    check_store(store_url)
    for jid, w in held.items():
        await w.call("ACK", {"jid": jid})
    k = QueueKeys("fz")
    with trio.fail_after(60):  # drain what waits and what comes back (snoozes, retries)
        idle = 0
        while idle < 4:
            got = False
            for w in workers:
                reply = await w.call("FETCH", "fz")
                if reply is not None:
                    got = True
                    await w.call("ACK", {"jid": json.loads(reply)["jid"]})
            coming = rdb.zcount(k.scheduled, "-inf", time.time() + 1)  # snoozed, due now
            idle = 0 if got or coming else idle + 1
    check_store(store_url)
    assert rdb.llen(k.queue) == 0 and rdb.zcard(k.prioritized) == 0
    assert not rdb.hgetall(k.running) and not rdb.hgetall(k.leases)
    assert int(rdb.hget(k.meta, "laned") or 0) == 0
    assert not rdb.keys(k.lane("*"))
