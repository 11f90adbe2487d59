"""The job lifecycle against a real Redis: each transition and the state it leaves behind; as on
one Redis, in split mode and on the cluster rig."""

import json
import random
from typing import Any

import pytest
import redis
import trio

from hopper_broker.config import Config, Settings
from hopper_broker.errors import Discard, Halt
from hopper_broker.manager import Manager
from hopper_broker.middleware import Chains, Context, Next
from hopper_broker.store import keys
from hopper_broker.store.cluster import ClusterPipeline, connection_for
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import FailPayload, Job, MutateFilter, Mutation, job_decoder
from tests.conftest import StartBroker

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

NOW = 1_764_000_000.0
K = QueueKeys("default")


class Clock:
    def __init__(self) -> None:
        self.now = NOW
        self.offset = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(nursery: trio.Nursery, start_broker: StartBroker) -> Store:
    """The store of the test's mode (one Redis, split, or the cluster rig), as a broker's."""
    connection = connection_for(start_broker.redis_url, lambda: 10.0)
    await nursery.start(connection.run)
    return Store(connection, split=start_broker.split or isinstance(connection, ClusterPipeline))


def make_manager(store: Store, chains: Chains | None = None, **config: Any) -> Manager:
    settings = {"fetch_timeout": 0.2, **config}
    return Manager(
        store, Settings(Config(**settings)), chains=chains, clock=Clock(), rng=random.Random(3)
    )


@pytest.fixture
def manager(store: Store) -> Manager:
    return make_manager(store)


def new(jid: str, **fields: Any) -> Job:
    return Job(
        jid=jid, jobtype=fields.pop("jobtype", "work"), args=fields.pop("args", []), **fields
    )


async def test_push_stores_record_queue_and_index(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", args=[1, "é"]), NOW)
    assert rdb.lrange(K.queue, 0, -1) == ["jid-0001"]
    record = json.loads(rdb.hget(K.jobs, "jid-0001"))
    assert record["args"] == [1, "é"] and record["enqueued_at"] and record["retry"] == 25
    assert rdb.hget(keys.JIDS, "jid-0001") == "default"
    assert rdb.smembers(keys.QUEUES) == {"default"}


async def test_duplicate_live_jid_is_refused(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001"), NOW)
    with pytest.raises(CommandError, match="already in use"):
        await manager.push(new("jid-0001", args=[2]), NOW)
    assert rdb.llen(K.queue) == 1


async def test_future_at_is_scheduled(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", at="2030-01-01T00:00:00Z"), NOW)
    assert rdb.llen(K.queue) == 0
    assert rdb.zscore(K.scheduled, "jid-0001") == 1893456000.0
    assert "enqueued_at" not in json.loads(rdb.hget(K.jobs, "jid-0001"))


async def test_past_at_is_enqueued(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", at="2020-01-01T00:00:00Z"), NOW)
    assert rdb.llen(K.queue) == 1


async def test_bad_at_and_bad_queue(manager: Manager) -> None:
    with pytest.raises(CommandError, match="invalid timestamp for 'at': \"soon\""):
        await manager.push(new("jid-0001", at="soon"), NOW)
    with pytest.raises(CommandError, match='cannot get "a b" queue'):
        await manager.push(new("jid-0001", queue="a b"), NOW)


async def test_fetch_reserves_with_expiry(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.push(new("jid-0002", reserve_for=600), NOW)
    await manager.push(new("jid-0003", reserve_for=5), NOW)
    first = await manager.fetch(["default"], "w1", NOW)
    assert first is not None and first.jid == "jid-0001" and first.queue == "default"
    assert job_decoder.decode(first.payload).jid == "jid-0001"
    assert rdb.zscore(K.working, "jid-0001") == NOW + 1800
    await manager.fetch(["default"], "w1", NOW)
    assert rdb.zscore(K.working, "jid-0002") == NOW + 600
    await manager.fetch(["default"], "w1", NOW)
    assert rdb.zscore(K.working, "jid-0003") == NOW + 60  # clamped to the minimum


async def test_fetch_follows_queue_order(manager: Manager) -> None:
    await manager.push(new("jid-low1", queue="low"), NOW)
    await manager.push(new("jid-high", queue="high"), NOW)
    got = await manager.fetch(["high", "low"], "", NOW)
    assert got is not None and got.jid == "jid-high"
    got = await manager.fetch(["high", "low"], "", NOW)
    assert got is not None and got.jid == "jid-low1"


async def test_fetch_empty_waits_then_none(manager: Manager) -> None:
    start = trio.current_time()
    assert await manager.fetch(["default"], "", NOW) is None
    assert trio.current_time() - start >= 0.2


async def test_fetch_without_queues(manager: Manager) -> None:
    with pytest.raises(CommandError, match="at least one queue"):
        await manager.fetch([], "", NOW)


async def test_waiting_fetch_wakes_on_push(store: Store) -> None:
    manager = make_manager(store, fetch_timeout=30)
    got: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def fetch() -> None:
            got.append(await manager.fetch(["default"], "", NOW))

        nursery.start_soon(fetch)
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(5):
            await manager.push(new("jid-0001"), NOW)
    assert got[0].jid == "jid-0001"


async def test_ack_finishes_the_job_and_keeps_its_final_record(
    manager: Manager, rdb: redis.Redis
) -> None:
    await manager.push(new("jid-0001"), NOW)
    got = await manager.fetch(["default"], "w", NOW)
    assert got is not None
    await manager.ack("jid-0001", None, NOW, result=b'{"n":1}')  # no hint: found by the index
    assert rdb.zcard(K.working) == 0 and rdb.zscore(K.finished, "jid-0001") == NOW
    assert rdb.hget(keys.JIDS, "jid-0001") == "~default"  # finished, still answerable
    assert json.loads(rdb.hget(K.final, "jid-0001")) == {"state": "done", "result": {"n": 1}}
    assert json.loads(rdb.hget(K.jobs, "jid-0001"))["jid"] == "jid-0001"  # the record stays
    assert rdb.hget(keys.STATS, "processed") == "1"
    assert rdb.hget(keys.STATS, "processed:2025-11-24") == "1"
    assert await manager.sweeps.purge_finished(NOW + 86399) == 0
    assert await manager.sweeps.purge_finished(NOW + 86400) == 1
    assert rdb.hget(keys.JIDS, "jid-0001") is None and rdb.hlen(K.jobs) == rdb.hlen(K.final) == 0


async def test_finished_jobs_kept_none_or_at_most(store: Store, rdb: redis.Redis) -> None:
    for settings, kept in (({"finished_ttl": 0}, 0), ({"finished_max": 2}, 2)):
        rdb.flushall()
        manager = make_manager(store, **settings)
        for n in range(3):
            await manager.push(new(f"jid-{n:04d}"), NOW)
            await manager.fetch(["default"], "w", NOW)
            await manager.ack(f"jid-{n:04d}", "default", NOW + n)
        assert rdb.hlen(K.jobs) == rdb.zcard(K.finished) == kept
        assert sorted(rdb.hkeys(keys.JIDS)) == [f"jid-{n:04d}" for n in range(3 - kept, 3)]


async def test_ack_unknown_is_harmless(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.ack("jid-0001", None, NOW)  # queued, not reserved: nothing changes
    await manager.ack("nope-nope", None, NOW)
    assert rdb.llen(K.queue) == 1 and rdb.hget(keys.STATS, "processed") is None


async def fail(manager: Manager, jid: str, now: float = NOW, **report: Any) -> None:
    got = await manager.fetch(["default"], "w", now)
    assert got is not None and got.jid == jid
    await manager.fail(FailPayload(jid=jid, **report), "default", now)


async def test_fail_goes_to_retries_with_failure(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001"), NOW)
    await fail(manager, "jid-0001", errtype="Boom", message="bad", backtrace=["a.py:1"])
    score = rdb.zscore(K.retries, "jid-0001")
    assert score is not None and NOW + 15 <= score <= NOW + 44
    failure = json.loads(rdb.hget(K.jobs, "jid-0001"))["failure"]
    assert failure["errtype"] == "Boom" and failure["backtrace"] == ["a.py:1"]
    assert failure["retry_count"] == 0 and failure["remaining"] == 25
    assert rdb.hmget(keys.STATS, "processed", "failures") == ["1", "1"]


async def test_fail_retry_zero_discards(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", retry=0), NOW)
    await fail(manager, "jid-0001")
    assert rdb.zcard(K.retries) == 0 and rdb.zscore(K.finished, "jid-0001") == NOW
    assert rdb.hget(keys.JIDS, "jid-0001") == "~default"
    assert json.loads(rdb.hget(K.final, "jid-0001")) == {"state": "discarded"}
    assert json.loads(rdb.hget(K.jobs, "jid-0001"))["failure"]["retry_count"] == 0


async def test_fail_negative_retry_goes_dead(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", retry=-1), NOW)
    await fail(manager, "jid-0001")
    assert rdb.zscore(K.dead, "jid-0001") == NOW + 180 * 86400


async def test_retries_run_out_into_dead(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", retry=1), NOW)
    await fail(manager, "jid-0001")
    assert await manager.sweeps.enqueue_due("retries", NOW + 100) == 1
    await fail(manager, "jid-0001", NOW + 100)
    assert rdb.zcard(K.retries) == 0 and rdb.zcard(K.dead) == 1
    failure = json.loads(rdb.hget(K.jobs, "jid-0001"))["failure"]
    assert failure["retry_count"] == 1 and failure["remaining"] == 0


async def test_fail_errors(manager: Manager) -> None:
    with pytest.raises(CommandError, match="missing JID"):
        await manager.fail(FailPayload(), None, NOW)
    with pytest.raises(CommandError, match="Job not found nope-nope"):
        await manager.fail(FailPayload(jid="nope-nope"), None, NOW)
    await manager.push(new("jid-0001"), NOW)
    with pytest.raises(CommandError, match="Job not found jid-0001"):  # queued, not reserved
        await manager.fail(FailPayload(jid="jid-0001"), None, NOW)


async def test_scheduled_jobs_enqueue_when_due(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", at="2025-11-24T16:00:10Z"), NOW)
    assert await manager.sweeps.enqueue_due("scheduled", NOW + 5) == 0
    assert await manager.sweeps.enqueue_due("scheduled", NOW + 10) == 1
    assert rdb.lrange(K.queue, 0, -1) == ["jid-0001"]
    assert json.loads(rdb.hget(K.jobs, "jid-0001"))["enqueued_at"] == "2025-11-24T16:00:10Z"


async def test_expired_reservation_is_reaped_once(store: Store, rdb: redis.Redis) -> None:
    managers = [make_manager(store) for _ in range(4)]
    for i in range(250):
        await managers[0].push(new(f"jid-{i:05d}"), NOW)
    for _ in range(250):
        assert await managers[0].fetch(["default"], "w", NOW) is not None
    later = NOW + 1801
    counts: list[int] = []
    async with trio.open_nursery() as nursery:
        for m in managers:
            nursery.start_soon(lambda m=m: _append(counts, m.sweeps.reap_expired(later)))
    assert sum(counts) == 250
    assert rdb.zcard(K.retries) == 250 and rdb.zcard(K.working) == 0
    failure = json.loads(rdb.hget(K.jobs, "jid-00000"))["failure"]
    assert failure["errtype"] == "ReservationExpired"
    assert rdb.hget(keys.STATS, "failures") == "250"


async def _append(counts: list[int], work: Any) -> None:
    counts.append(await work)


async def test_concurrent_enqueue_moves_each_job_once(store: Store, rdb: redis.Redis) -> None:
    managers = [make_manager(store) for _ in range(4)]
    for i in range(300):
        await managers[0].push(new(f"jid-{i:05d}", at="2025-11-24T16:00:01Z"), NOW)
    counts: list[int] = []
    async with trio.open_nursery() as nursery:
        for m in managers:
            nursery.start_soon(
                lambda m=m: _append(counts, m.sweeps.enqueue_due("scheduled", NOW + 2))
            )
    assert sum(counts) == 300 and rdb.llen(K.queue) == 300


async def test_reservation_not_expired_is_kept(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.fetch(["default"], "w", NOW)
    assert await manager.sweeps.reap_expired(NOW + 1799) == 0
    assert rdb.zcard(K.working) == 1


async def test_a_queue_due_with_nothing_expired_is_passed(
    manager: Manager, rdb: redis.Redis
) -> None:
    # another broker reaped the queue's reservations first: the due index still names it
    await manager.push(new("jid-0001"), NOW)
    await manager.fetch(["default"], "w", NOW)
    rdb.zadd(keys.DUE["working"], {"default": NOW})
    assert await manager.sweeps.reap_expired(NOW + 1) == 0
    assert rdb.zcard(K.working) == 1 and rdb.zscore(keys.DUE["working"], "default") == NOW + 1800


async def test_dead_jobs_are_purged(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001", retry=-1), NOW)
    await fail(manager, "jid-0001")
    assert await manager.sweeps.purge_dead(NOW + 100) == 0
    assert await manager.sweeps.purge_dead(NOW + 180 * 86400 + 1) == 1
    assert rdb.zcard(K.dead) == 0 and rdb.hlen(K.jobs) == 0


async def retry_three(manager: Manager) -> None:
    for jid, jobtype in (("jid-aaaa", "a"), ("jid-bbbb", "b"), ("jid-cccc", "a")):
        await manager.push(new(jid, jobtype=jobtype, args=[jid.upper()]), NOW)
        await fail(manager, jid)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (None, {"jid-aaaa", "jid-bbbb", "jid-cccc"}),
        (MutateFilter(jids=["jid-bbbb", "nope-nope"]), {"jid-bbbb"}),
        (MutateFilter(jobtype="a"), {"jid-aaaa", "jid-cccc"}),
        (MutateFilter(regexp="*JID-CCCC*"), {"jid-cccc"}),
        (MutateFilter(regexp="*JID-*", jobtype="b"), {"jid-bbbb"}),
    ],
)
async def test_mutate_kill_with_filters(
    manager: Manager, rdb: redis.Redis, flt: MutateFilter | None, expected: set[str]
) -> None:
    await retry_three(manager)
    await manager.mutator.run(Mutation(cmd="kill", target="retries", filter=flt), NOW)
    assert set(rdb.zrange(K.dead, 0, -1)) == expected
    assert rdb.zcard(K.retries) == 3 - len(expected)


async def test_mutate_requeue_discard_clear(manager: Manager, rdb: redis.Redis) -> None:
    await retry_three(manager)
    await manager.mutator.run(
        Mutation(cmd="requeue", target="retries", filter=MutateFilter(jobtype="b")), NOW
    )
    assert rdb.lrange(K.queue, 0, -1) == ["jid-bbbb"]
    await manager.mutator.run(
        Mutation(cmd="discard", target="retries", filter=MutateFilter(jids=["jid-aaaa"])), NOW
    )
    assert rdb.zrange(K.retries, 0, -1) == ["jid-cccc"]
    assert rdb.hget(keys.JIDS, "jid-aaaa") is None
    await manager.mutator.run(Mutation(cmd="clear", target="retries"), NOW)
    assert rdb.zcard(K.retries) == 0 and rdb.hkeys(K.jobs) == ["jid-bbbb"]


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (Mutation(cmd="kill", target="working"), "invalid target for mutation command"),
        (Mutation(cmd="explode", target="dead"), "unknown mutate operation"),
    ],
)
async def test_mutate_errors(manager: Manager, mutation: Mutation, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        await manager.mutator.run(mutation, NOW)


async def test_pause_resume_remove(manager: Manager, rdb: redis.Redis) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.admin.pause(["default", "unknown"], True)
    assert await manager.fetch(["default"], "", NOW) is None
    await manager.admin.pause(["*"], False)
    await manager.admin.pause(["default"], True)
    await manager.admin.remove(["default"])
    assert not rdb.exists(K.queue, K.meta) and rdb.hlen(K.jobs) == 0
    assert rdb.smembers(keys.QUEUES) == set() and rdb.hlen(keys.JIDS) == 0


async def test_latency(manager: Manager) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.push(new("jid-0002"), NOW + 5)
    assert await manager.admin.latency(["default", "other"], NOW + 10) == {
        "default": 10.0,
        "other": 0,
    }
    with pytest.raises(CommandError, match="wildcards"):
        await manager.admin.latency(["*"], NOW)


async def test_info_counts(manager: Manager, store_mode: str) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.push(new("jid-0002", at="2030-01-01T00:00:00Z", queue="later"), NOW)
    info = await manager.admin.info(NOW)
    assert list(info) == ["now", "server_utc_time", "faktory", "server", "hopper"]
    faktory = info["faktory"]
    # a queue exists once a job was enqueued to it; split mode lists it at its first push
    # (before the push's script: docs/cluster.md, "Queues listed")
    listed = {"default": 1} if store_mode == "one" else {"default": 1, "later": 0}
    assert faktory["queues"] == listed
    assert faktory["sets"] == {"scheduled": 1, "retries": 0, "dead": 0, "working": 0}
    assert faktory["total_enqueued"] == 1 and faktory["total_queues"] == len(listed)


async def test_worker_states_move_forward_only(manager: Manager) -> None:
    with pytest.raises(CommandError, match="unknown worker w1"):
        await manager.workers.beat("w1", "", 0, NOW)
    await manager.workers.join("w1", NOW, b"{}")
    assert await manager.workers.beat("w1", "", 10, NOW) == "running"
    assert await manager.workers.beat("w1", "quiet", 10, NOW) == "quiet"
    assert await manager.workers.beat("w1", "running", 10, NOW) == "quiet"
    assert await manager.workers.beat("w1", "terminate", 10, NOW) == "terminate"
    assert await manager.workers.beat("w1", "bogus", 10, NOW) == "terminate"


async def test_silent_workers_are_reaped(manager: Manager) -> None:
    await manager.workers.join("w1", NOW, b"{}")
    await manager.workers.join("w2", NOW + 50, b"{}")
    assert await manager.workers.reap(NOW + 61) == ["w1"]
    with pytest.raises(CommandError):
        await manager.workers.beat("w1", "", 0, NOW)


async def test_quiet_worker_gets_nothing(manager: Manager) -> None:
    await manager.push(new("jid-0001"), NOW)
    await manager.workers.join("w1", NOW, b"{}")
    await manager.workers.beat("w1", "quiet", 0, NOW)
    assert await manager.fetch(["default"], "w1", NOW) is None
    assert await manager.fetch(["default"], "w2", NOW) is not None


async def test_push_middleware_can_change_and_halt(store: Store, rdb: redis.Redis) -> None:
    chains = Chains()

    async def stamp(ctx: Context, next_: Next) -> None:
        if ctx.job.jobtype == "forbidden":
            raise Halt("DENIED", "not today")
        ctx.job.custom = {"stamped": True}
        await next_()

    chains.push.add(stamp)
    manager = make_manager(store, chains)
    await manager.push(new("jid-0001"), NOW)
    assert json.loads(rdb.hget(K.jobs, "jid-0001"))["custom"] == {"stamped": True}
    with pytest.raises(Halt) as caught:
        await manager.push(new("jid-0002", jobtype="forbidden"), NOW)
    assert caught.value.render() == "DENIED not today"
    assert rdb.hlen(K.jobs) == 1


async def test_fetch_middleware_discard_and_halt(store: Store, rdb: redis.Redis) -> None:
    chains = Chains()

    async def expire(ctx: Context, next_: Next) -> None:
        if ctx.job.args == ["old"]:
            raise Discard()
        if ctx.job.args == ["stop"]:
            raise Halt("NOPE", "halted")
        await next_()

    chains.fetch.add(expire)
    manager = make_manager(store, chains)
    await manager.push(new("jid-0001", args=["old"]), NOW)
    await manager.push(new("jid-0002", args=["new"]), NOW)
    got = await manager.fetch(["default"], "", NOW)
    assert got is not None and got.jid == "jid-0002"
    assert rdb.zscore(K.finished, "jid-0001") == NOW  # discarded: kept finished
    assert json.loads(rdb.hget(K.final, "jid-0001")) == {"state": "discarded"}
    await manager.push(new("jid-0003", args=["stop"]), NOW)
    with pytest.raises(Halt):
        await manager.fetch(["default"], "", NOW)
    assert rdb.lrange(K.queue, 0, -1) == ["jid-0003"]  # handed back, not lost
    assert rdb.zrange(K.working, 0, -1) == ["jid-0002"]
