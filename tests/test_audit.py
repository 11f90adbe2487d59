"""`hopper check`: each broken invariant is reported, repaired without losing a job, and a store
being worked on is never reported broken; as on one Redis, in split mode, and on the cluster
rig."""

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store import keys
from hopper_broker.store.audit import Auditor
from hopper_broker.store.audit_part import Report
from hopper_broker.store.cluster import ClusterPipeline, connection_for
from hopper_broker.store.keys import DUE, QueueKeys
from hopper_broker.store.redis import Store
from hopper_client.schema.jobs import Job, encode
from tests.conftest import StartBroker, clean_env
from tests.wire import Wire, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

A, B = QueueKeys("a"), QueueKeys("b")


@pytest.fixture
async def store(nursery: trio.Nursery, start_broker: StartBroker, rdb: redis.Redis) -> Store:
    """The store of the test's mode, as `hopper check` reaches it."""
    connection = connection_for(start_broker.redis_url, lambda: 10.0)
    await nursery.start(connection.run)
    rdb.set(keys.SCHEMA_KEY, keys.SCHEMA)
    return Store(connection, split=start_broker.split or isinstance(connection, ClusterPipeline))


def record(rdb: redis.Redis, k: QueueKeys, jid: str, index: bool = True) -> None:
    rdb.hset(k.jobs, jid, encode(Job(jid=jid, jobtype="x", args=[], queue=k.name)))
    if index:
        rdb.hset(keys.JIDS, jid, k.name)


def kinds(report: Report) -> list[tuple[str, str, str]]:
    return sorted((p.kind, p.queue, p.jid) for p in report.problems)


Damage = Callable[[redis.Redis], None]


def no_place(r: redis.Redis) -> None:
    record(r, A, "jid-0001")


def listed_without_record(r: redis.Redis) -> None:
    r.lpush(A.queue, "jid-0001")
    r.sadd(keys.QUEUES, "a")


def retry_without_record(r: redis.Redis) -> None:
    r.zadd(A.retries, {"jid-0001": 5})
    r.zadd(DUE["retries"], {"a": 5})


def two_places(r: redis.Redis) -> None:
    record(r, A, "jid-0001")
    r.lpush(A.queue, "jid-0001")
    r.sadd(keys.QUEUES, "a")
    r.zadd(A.retries, {"jid-0001": 5})
    r.zadd(DUE["retries"], {"a": 5})


def listed_twice(r: redis.Redis) -> None:
    record(r, A, "jid-0001")
    r.lpush(A.queue, "jid-0001", "jid-0001")
    r.sadd(keys.QUEUES, "a")


def in_lane(r: redis.Redis, lane: str, jid: str, score: float) -> None:
    """As enter_lane() in lib_lanes.lua writes it."""
    r.zadd(A.lane(lane), {jid: score})
    if r.zscore(A.lanes, lane) is None:
        r.zadd(A.lanes, {lane: r.hincrby(A.meta, "turn", 1)})
    r.hset(A.meta, "lanes", 1)
    r.hincrby(A.meta, "laned", 1)
    r.sadd(keys.QUEUES, "a")


def in_two_lanes(r: redis.Redis) -> None:
    r.hset(A.jobs, "jid-0001", encode(Job(jid="jid-0001", jobtype="x", queue="a", group="g1")))
    r.hset(keys.JIDS, "jid-0001", "a")
    in_lane(r, "g:g1", "jid-0001", 1)
    in_lane(r, "t:x", "jid-0001", 2)


def laned_without_record(r: redis.Redis) -> None:
    in_lane(r, "g:g1", "jid-0001", 1)


def no_index(r: redis.Redis) -> None:
    record(r, A, "jid-0001", index=False)
    r.lpush(A.queue, "jid-0001")
    r.sadd(keys.QUEUES, "a")


def stale_index(r: redis.Redis) -> None:
    r.hset(keys.JIDS, "jid-0001", "a")


def index_elsewhere(r: redis.Redis) -> None:
    record(r, A, "jid-0001", index=False)
    r.hset(keys.JIDS, "jid-0001", "b")
    r.lpush(A.queue, "jid-0001")
    r.sadd(keys.QUEUES, "a")


def jid_in_two_queues(r: redis.Redis) -> None:
    for k in (A, B):
        record(r, k, "jid-0001", index=False)
        r.lpush(k.queue, "jid-0001")
        r.sadd(keys.QUEUES, k.name)
    r.hset(keys.JIDS, "jid-0001", "b")


def not_due(r: redis.Redis) -> None:
    record(r, A, "jid-0001")
    r.zadd(A.scheduled, {"jid-0001": 5})


def late_due(r: redis.Redis) -> None:
    not_due(r)
    r.zadd(DUE["scheduled"], {"a": 50})


def not_listed(r: redis.Redis) -> None:
    record(r, A, "jid-0001")
    r.lpush(A.queue, "jid-0001")


def note_without_job(r: redis.Redis) -> None:
    r.hset(A.final, "jid-0001", '{"state":"discarded"}')


def stale_expiry(r: redis.Redis) -> None:
    r.zadd(A.expiring, {"jid-0001": 5})
    r.hset(A.meta, "expiring", 1)


def expiries_unseen(r: redis.Redis) -> None:
    record(r, A, "jid-0001")
    r.lpush(A.queue, "jid-0001")
    r.sadd(keys.QUEUES, "a")
    r.zadd(A.expiring, {"jid-0001": 5})


def holder_without_reservation(r: redis.Redis) -> None:
    r.hset(A.holders, "jid-0001", "!w1")


def finished_without_record(r: redis.Redis) -> None:
    r.zadd(A.finished, {"jid-0001": 5})
    r.zadd(DUE["finished"], {"a": 5})


def index_says_live(r: redis.Redis) -> None:
    record(r, A, "jid-0001")
    finished_without_record(r)


def stale_finished_index(r: redis.Redis) -> None:
    r.hset(keys.JIDS, "jid-0001", "~a")


def index_says_finished(r: redis.Redis) -> None:
    no_index(r)
    r.hset(keys.JIDS, "jid-0001", "~a")


def tallies_not_due(r: redis.Redis) -> None:
    r.hset(A.tallies, "jid-0001/o", json.dumps(["b-AAAAAAAAAAAAAA", "ok", "", 5.0]))


def worker_without_record(r: redis.Redis) -> None:
    r.zadd(keys.WORKERS, {"w1": 5})


def worker_without_heartbeat(r: redis.Redis) -> None:
    r.hset(keys.worker("w1"), mapping={"state": "running", "beat": 5})


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (no_place, [("no place", "a", "jid-0001")]),
        (listed_without_record, [("no record", "a", "jid-0001")]),
        (retry_without_record, [("no record", "a", "jid-0001")]),
        (two_places, [("two places", "a", "jid-0001")]),
        (listed_twice, [("two places", "a", "jid-0001")]),
        (in_two_lanes, [("two places", "a", "jid-0001")]),
        (laned_without_record, [("no record", "a", "jid-0001")]),
        (no_index, [("no index", "a", "jid-0001")]),
        (stale_index, [("stale index", "a", "jid-0001")]),
        (index_elsewhere, [("index elsewhere", "a", "jid-0001")]),
        (jid_in_two_queues, [("jid in two queues", "a", "jid-0001")]),
        (not_due, [("not due", "a", "")]),
        (late_due, [("not due", "a", "")]),
        (not_listed, [("not listed", "a", "")]),
        (note_without_job, [("note without job", "a", "jid-0001")]),
        (holder_without_reservation, [("holder without reservation", "a", "jid-0001")]),
        (stale_expiry, [("stale expiry", "a", "jid-0001")]),
        (expiries_unseen, [("expiries unseen by fetch", "a", "")]),
        (finished_without_record, [("no record", "a", "jid-0001")]),
        (index_says_live, [("index says live", "a", "jid-0001")]),
        (stale_finished_index, [("stale index", "a", "jid-0001")]),
        (index_says_finished, [("index says finished", "a", "jid-0001")]),
        (tallies_not_due, [("tallies not due", "a", "")]),
        (worker_without_record, [("worker without record", "", "w1")]),
        (worker_without_heartbeat, [("worker without heartbeat", "", "w1")]),
    ],
)
async def test_each_problem_is_found_and_repaired(
    store: Store, rdb: redis.Redis, damage: Damage, expected: list[tuple[str, str, str]]
) -> None:
    assert (await Auditor(store, settle=0).run()).problems == []
    damage(rdb)
    found = await Auditor(store, settle=0).run()
    assert kinds(found) == expected and not found.clean
    repaired = await Auditor(store, repair=True, settle=0).run()
    assert kinds(repaired) == expected and repaired.clean
    assert (await Auditor(store, settle=0).run()).problems == []


async def test_repairs_keep_every_job(store: Store, rdb: redis.Redis) -> None:
    no_place(rdb)
    await Auditor(store, repair=True, settle=0).run()
    assert rdb.lrange(A.queue, 0, -1) == ["jid-0001"]  # a job in no place runs again


async def test_two_places_keep_the_most_advanced(store: Store, rdb: redis.Redis) -> None:
    two_places(rdb)
    rdb.zadd(A.working, {"jid-0001": 9})
    await Auditor(store, repair=True, settle=0).run()
    assert rdb.llen(A.queue) == 0 and rdb.zcard(A.retries) == 0
    assert rdb.zscore(A.working, "jid-0001") == 9  # a worker holds it


async def test_a_reservation_without_record_gives_its_lane_slot_back(
    broker: App, store: Store, rdb: redis.Redis
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET a group_concurrency=1")
    await w.call("PUSH", job("jid-0001", queue="a", group="g1"))
    assert json.loads(await w.call("FETCH", "a"))["jid"] == "jid-0001"
    rdb.hdel(A.jobs, "jid-0001")  # the damage: a reservation without its record
    repaired = await Auditor(store, repair=True, settle=0).run()
    assert ("no record", "a", "jid-0001") in kinds(repaired) and repaired.clean
    assert (await Auditor(store, settle=0).run()).problems == []
    await w.call("PUSH", job("jid-0002", queue="a", group="g1"))
    assert json.loads(await w.call("FETCH", "a"))["jid"] == "jid-0002"  # the group's one slot


async def test_jid_in_two_queues_gets_a_new_jid(store: Store, rdb: redis.Redis) -> None:
    jid_in_two_queues(rdb)
    await Auditor(store, repair=True, settle=0).run()
    assert rdb.lrange(A.queue, 0, -1) == ["jid-0001-a"]
    assert json.loads(rdb.hget(A.jobs, "jid-0001-a"))["jid"] == "jid-0001-a"
    assert rdb.hgetall(keys.JIDS) == {"jid-0001": "b", "jid-0001-a": "a"}


async def test_an_old_or_missing_schema_is_reported(store: Store, rdb: redis.Redis) -> None:
    rdb.delete(keys.SCHEMA_KEY)
    report = await Auditor(store, repair=True, settle=0).run()
    assert [p.kind for p in report.problems] == ["schema"] and not report.clean
    assert "migrates the store" in report.problems[0].detail
    rdb.set(keys.SCHEMA_KEY, keys.SCHEMA + 1)
    report = await Auditor(store, settle=0).run()
    assert report.problems[0].detail.endswith(
        "written by a newer Hopper: check it with that version"
    )


async def test_a_store_at_work_is_never_reported_broken(broker: App, store: Store) -> None:
    """Checks run while jobs are pushed, fetched, acknowledged, failed and scheduled: what a
    batch read sees mid-change is looked at again atomically, so no problem is reported."""
    reports: list[Report] = []
    done = trio.Event()

    async def work(n: int) -> None:
        w = await Wire.open(broker.port, hello={"wid": f"w{n}"})
        i = 0
        while not done.is_set():
            jid = f"j{n}-{i:06d}"
            queue = f"q{i % 3}"
            await w.call("PUSH", job(jid, queue=queue))
            await w.call("PUSH", job(f"{jid}-s", queue=queue, at="2099-01-01T00:00:00Z"))
            fetched = json.loads(await w.call("FETCH", queue))
            if i % 2:
                await w.call("ACK", {"jid": fetched["jid"]})
            else:
                await w.call("FAIL", {"jid": fetched["jid"], "message": "no"})
            i += 1
        await w.aclose()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(work, n)
            for _ in range(5):
                reports.append(await Auditor(store).run())
            done.set()
    assert all(r.problems == [] for r in reports), [r.problems for r in reports]
    assert reports[-1].jobs > 0


async def test_the_command_reports_and_repairs(store_url: str, rdb: redis.Redis) -> None:
    rdb.set(keys.SCHEMA_KEY, keys.SCHEMA)
    no_place(rdb)
    command = [sys.executable, "-m", "hopper_broker", "check", "--redis-url", store_url]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=60, env=clean_env()
        )

    found = run()
    assert found.returncode == 1 and found.stderr == ""
    assert found.stdout.splitlines() == [
        "no place: queue a jid-0001",
        "checked 1 queues, 1 jobs, 0 workers: 1 problems",
    ]
    repaired = run("--repair", "--json")
    assert repaired.returncode == 0
    assert json.loads(repaired.stdout)["problems"][0]["repaired"] is True
    assert run().returncode == 0
