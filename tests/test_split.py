"""Split mode (docs/cluster.md): the hot path's scripts (push, fetch, ack, fail, release) touch
their queue's slot only and hand back their global writes, which the store makes next on the
global keys. On a real Redis Cluster, jobs of queues whose slots are on other masters than the
global keys go through their whole life and end where they would on one Redis; on one Redis, a
broker that dies between the two steps leaves nothing `hopper check --repair` cannot mend, and
no job lost."""

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis
import trio

from hopper_broker.manager import Manager
from hopper_broker.store import keys
from hopper_broker.store.address import Address
from hopper_broker.store.audit import Auditor
from hopper_broker.store.base import Redis, Script, Visit
from hopper_broker.store.cluster import ClusterPipeline
from hopper_broker.store.cluster_map import ClusterAddress
from hopper_broker.store.connection import Pipeline
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.pushes import CLAIM, TALLY_SWEEP
from hopper_broker.store.redis import Store
from hopper_broker.store.slots import key_slot
from hopper_client.schema.errors import BrokerError
from hopper_client.schema.jobs import FailPayload
from tests.cluster_rig import ClusterRig
from tests.test_manager import NOW, make_manager, new

LATER = "2030-01-01T00:00:00Z"  # a time to schedule jobs for
K = QueueKeys("default")

CLAIM_KEYS = (keys.JIDS, keys.QUEUES, keys.DUE["scheduled"], keys.DUE_TALLIES)  # claim.lua


def queues_away_from_globals(rig: ClusterRig) -> list[str]:
    """One queue name for each master that does not own the global keys' slot."""
    home = rig.owner(key_slot(keys.JIDS))
    found: dict[int, str] = {}
    for n in range(10_000):
        name = f"q{n}"
        port = rig.owner(key_slot(QueueKeys(name).jobs))
        if port != home:
            found.setdefault(port, name)
        if len(found) == len(rig.masters()) - 1:
            return sorted(found.values())
    raise AssertionError("no queue names found on the other masters")


@pytest.fixture
async def cluster_manager(redis_cluster: ClusterRig, nursery: trio.Nursery) -> Manager:
    """A manager in split mode over the flushed cluster rig (no loops)."""
    redis_cluster.flush()
    pipeline = ClusterPipeline(ClusterAddress(redis_cluster.url), lambda: 5.0)
    await nursery.start(pipeline.run)
    store = Store(pipeline, split=True)
    await store.redis.execute("SET", keys.SCHEMA_KEY, keys.SCHEMA)
    return make_manager(store)


async def test_a_jobs_whole_life_on_a_cluster(
    cluster_manager: Manager, redis_cluster: ClusterRig
) -> None:
    manager, store = cluster_manager, cluster_manager.store
    first, second = queues_away_from_globals(redis_cluster)

    async def read(*command: Any) -> Any:
        return await store.redis.execute(*command)

    async def mapping(key: str) -> dict[bytes, bytes]:
        flat = await read("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    await manager.push(new("done-0001", queue=first), NOW)
    await manager.push(new("fails-0001", queue=second), NOW)
    await manager.push(new("later-0001", queue=first, at=LATER), NOW)
    graph = [
        new("graph-0001", queue=first),
        new("graph-0002", queue=second, custom={"after": ["graph-0001"]}),
    ]
    refused = await manager.push_many(graph, NOW)  # a workflow across queues in one PUSHB
    assert all("not served on a Redis Cluster" in str(error) for error in refused), refused
    with pytest.raises(BrokerError, match="already in use"):  # a live jid, in any queue
        await manager.push(new("done-0001", queue=second), NOW)
    index = await mapping(keys.JIDS)
    assert index == {
        b"done-0001": first.encode(),
        b"fails-0001": second.encode(),
        b"later-0001": first.encode(),
    }
    assert set(await read("SMEMBERS", keys.QUEUES)) == {first.encode(), second.encode()}
    assert await read("ZSCORE", keys.DUE["scheduled"], first) is not None

    done = await manager.fetch([first], "w1", NOW)
    failing = await manager.fetch([second], "w1", NOW)
    assert done is not None and failing is not None
    assert {done.jid, failing.jid} == {"done-0001", "fails-0001"}
    held = {m.decode() for m in await read("SMEMBERS", keys.held("w1"))}
    assert held == {f"{first}:done-0001", f"{second}:fails-0001"}
    assert await read("ZSCORE", keys.DUE["working"], second) is not None
    assert await read("ZSCORE", keys.HOLDING, "w1") is not None  # never said HELLO

    await manager.ack("done-0001", first, NOW, "w1", b'{"n":1}')
    await manager.fail(FailPayload(jid="fails-0001", errtype="E", message="m"), second, NOW, "w1")
    assert await read("HGET", keys.JIDS, "done-0001") == f"~{first}".encode()
    stats = await mapping(keys.STATS)
    assert stats[b"processed"] == b"2" and stats[b"failures"] == b"1"
    assert await read("ZSCORE", keys.DUE["retries"], second) is not None
    assert await read("ZSCORE", keys.DUE["finished"], first) is not None
    assert await read("SMEMBERS", keys.held("w1")) == []
    final = json.loads(await read("HGET", QueueKeys(first).final, "done-0001"))
    assert final == {"state": "done", "result": {"n": 1}}

    await manager.push(new("back-0001", queue=second), NOW)
    taken = await manager.fetch([second], "", NOW)
    assert taken is not None
    await manager.fetching.release(taken, NOW, "")
    assert await read("LRANGE", QueueKeys(second).queue, 0, -1) == [b"back-0001"]


class DiesAfterScripts(Redis):
    """A broker's store that dies after each split script, before its global writes."""

    async def apply(self, outbox: list[bytes], visit: str, queue: str | None = None) -> None:
        """Never made: the broker died first."""


async def split_manager(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis, kind: type[Redis]
) -> Manager:
    """A manager (no loops) in split mode on the test Redis, its store's access to Redis a
    `kind` (every room of the store shares it)."""
    pipeline = Pipeline(Address(redis_url))
    await nursery.start(pipeline.run)
    rdb.set(keys.SCHEMA_KEY, keys.SCHEMA)
    store = Store(pipeline, split=True)
    access = kind(pipeline, split=True)
    for room in (store, *vars(store).values()):
        if isinstance(getattr(room, "redis", None), Redis):
            room.redis = access
    return make_manager(store)


@pytest.fixture
async def dying(nursery: trio.Nursery, redis_url: str, rdb: redis.Redis) -> Manager:
    """A manager in split mode whose global writes never happen."""
    return await split_manager(nursery, redis_url, rdb, DiesAfterScripts)


async def repaired(dead: Store) -> list[str]:
    """What `hopper check --repair` (another process, on the store a broker died on) found;
    afterwards the check is clean."""
    store = Store(dead.redis.pipeline, split=True)
    found = (await Auditor(store, repair=True).run()).problems
    assert (await Auditor(store).run()).problems == []
    return sorted(problem.kind for problem in found)


async def test_a_death_between_the_steps_loses_no_job(dying: Manager, rdb: redis.Redis) -> None:
    """Each step of a job's life with its global writes lost: what must come first (the jid
    claimed, the queue listed, due entries for live jobs) is there, so no job is stranded; what
    is left behind is what docs/cluster.md says, and the check mends it."""
    store = dying.store
    await dying.push(new("jid-0001"), NOW)
    await dying.push(new("jid-0002", at=LATER), NOW)
    assert rdb.hgetall(keys.JIDS) == {"jid-0001": "default", "jid-0002": "default"}
    assert rdb.smembers(keys.QUEUES) == {"default"}
    assert rdb.zscore(keys.DUE["scheduled"], "default") is not None

    fetched = await dying.fetch(["default"], "w1", NOW)
    assert fetched is not None
    expiry = rdb.zscore(K.working, "jid-0001")
    assert expiry is not None and rdb.zscore(keys.DUE["working"], "default") <= expiry
    assert not rdb.exists(keys.held("w1"))  # lost: the reservation's expiry still ends it

    await dying.fail(FailPayload(jid="jid-0001", errtype="E", message="m"), "default", NOW, "w1")
    assert rdb.zscore(K.retries, "jid-0001") <= rdb.zscore(keys.DUE["retries"], "default")
    assert not rdb.exists(keys.STATS)  # counters of a lost step are lost

    rdb.zrem(K.retries, "jid-0001")  # run it again at once, and ACK it
    rdb.lpush(K.queue, "jid-0001")
    assert await dying.fetch(["default"], "w1", NOW) is not None
    await dying.ack("jid-0001", "default", NOW, "w1")
    assert rdb.zscore(K.finished, "jid-0001") is not None
    assert rdb.hget(keys.JIDS, "jid-0001") == "default"  # its ~default mark was lost

    await store.redis.run(CLAIM, CLAIM_KEYS, ("default", "", "", 1, "jid-0003", ""))
    # a push that died after its claim
    assert await repaired(store) == [
        "history due entry missing",  # the ACK's due entries and index mark were lost
        "index says live",
        "not due",  # its finished job's purge: kept until the check adds it
        "stale index",  # the claim of a push that died before storing its job
    ]
    assert rdb.hget(keys.JIDS, "jid-0003") is None


class Interleaved(Redis):
    """A store whose next second step waits for `between` to run first (another broker's
    call landing between a script and its outbox)."""

    between: Callable[[], Awaitable[None]] | None = None

    async def apply(self, outbox: list[bytes], visit: str, queue: str | None = None) -> None:
        step, self.between = self.between, None
        if step is not None:
            await step()
        await super().apply(outbox, visit, queue)


@pytest.fixture
async def interleaved(nursery: trio.Nursery, redis_url: str, rdb: redis.Redis) -> Manager:
    """A manager in split mode whose store is Interleaved."""
    return await split_manager(nursery, redis_url, rdb, Interleaved)


async def test_a_visit_never_loses_an_entry_added_meanwhile(
    interleaved: Manager, rdb: redis.Redis
) -> None:
    """A loop's visit moves the last due retry and reads the set empty; before it settles the
    due entry, another broker fails a job to retries, its announcement absorbed by the entry
    the visit read (an earlier time). The entry must stay (at or before the new retry), not
    go; undisturbed, the next visit makes it exact."""
    manager, store = interleaved, interleaved.store
    assert isinstance(store.redis, Interleaved)
    for jid in ("early-0001", "late-0001"):
        await manager.push(new(jid), NOW)
        assert await manager.fetch(["default"], "w1", NOW) is not None
    report = FailPayload(jid="early-0001", errtype="E", message="m")
    await manager.fail(report, "default", NOW, "w1")
    rdb.zadd(K.retries, {"early-0001": NOW - 10})  # due now, and the due entry says so
    rdb.zadd(keys.DUE["retries"], {"default": NOW - 10})

    async def fail_the_other() -> None:
        await manager.fail(FailPayload(jid="late-0001", errtype="E", message="m"), "default", NOW)

    store.redis.between = fail_the_other
    moved, _ = await store.sets.enqueue_due("default", "retries", NOW, "now", 10)
    assert moved == 1 and store.redis.between is None
    late = rdb.zscore(K.retries, "late-0001")
    assert late is not None and rdb.zscore(keys.DUE["retries"], "default") <= late

    await store.sets.enqueue_due("default", "retries", NOW, "now", 10)  # nobody in between
    assert rdb.zscore(keys.DUE["retries"], "default") == late
    rdb.zrem(K.retries, "late-0001")
    await store.sets.refresh_due("default", "retries")
    assert rdb.zscore(keys.DUE["retries"], "default") is None
    assert not rdb.hexists(keys.touched(keys.DUE["retries"]), "default")


@pytest.mark.parametrize("removal", ["flush", "remove_waiting"])
async def test_a_queue_emptied_while_another_broker_pushes_stays_listed_and_due(
    interleaved: Manager, rdb: redis.Redis, removal: str
) -> None:
    """FLUSH (or QUEUE REMOVE) empties a queue and unlists it in its second step; another
    broker's push lands between its script and that step. The queue stays listed, the new
    job's due entry stays, and the check finds nothing wrong."""
    manager, store = interleaved, interleaved.store
    assert isinstance(store.redis, Interleaved)
    await manager.push(new("old-0001"), NOW)
    if removal == "flush":  # its due entry absorbs the later job's announcement
        await manager.push(new("earlier-0001", at="2029-01-01T00:00:00Z"), NOW)

    async def push_meanwhile() -> None:
        await manager.push(new("new-0001"), NOW)
        await manager.push(new("later-0001", at=LATER), NOW)

    store.redis.between = push_meanwhile
    if removal == "flush":
        assert await store.queues.flush("default", 100) == 0
    else:
        assert await store.queues.remove_waiting("default", 100) == (1, 0)
    assert store.redis.between is None
    assert rdb.smembers(keys.QUEUES) == {"default"}
    assert rdb.zscore(keys.DUE["scheduled"], "default") <= rdb.zscore(K.scheduled, "later-0001")
    assert rdb.lrange(K.queue, 0, -1) == ["new-0001"]
    assert (await Auditor(store).run()).problems == []


async def test_a_push_sent_again_after_its_script_failed_is_stored(
    interleaved: Manager, rdb: redis.Redis
) -> None:
    """A push whose jid was claimed but whose script never ran (its node failed over, say):
    sent again to the same queue it is stored, not refused as a live jid; the claim of a
    queue that holds no job of it still refuses the jid elsewhere."""
    manager, store = interleaved, interleaved.store
    await store.redis.run(CLAIM, CLAIM_KEYS, ("default", "", "", 1, "jid-0001", ""))
    await manager.push(new("jid-0001"), NOW)
    assert rdb.lrange(K.queue, 0, -1) == ["jid-0001"]
    with pytest.raises(BrokerError, match="already in use"):
        await manager.push(new("jid-0001"), NOW)  # now it is live
    with pytest.raises(BrokerError, match="already in use"):
        await manager.push(new("jid-0001", queue="other"), NOW)


async def test_batch_tallies_lost_with_their_outbox_are_made_once_by_the_batches_loop(
    dying: Manager, nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """A broker that dies after each script of a batch's jobs loses the tallies its outboxes
    held (the batch counts nothing); the queue kept them, and another broker's batches loop
    makes each once, so the batch completes and its callback is pushed once."""
    healthy = await split_manager(nursery, redis_url, rdb, Redis)
    callback = {"jid": "callback-01", "jobtype": "Done", "queue": "cbs", "args": []}
    bid = await dying.batches.new(json.dumps({"success": callback}).encode(), NOW)
    members = ["member-0001", "member-0002"]
    for jid in members:
        await dying.push(new(jid, custom={"bid": bid}), NOW)
    await dying.batches.commit(bid, NOW)
    for _ in members:
        fetched = await dying.fetch(["default"], "w1", NOW)
        assert fetched is not None
        await dying.ack(fetched.jid, "default", NOW, "w1")
    assert (await healthy.batches.status(bid)).total == 0  # every tally lost
    assert sorted(rdb.hkeys(K.tallies)) == [f"{j}/{s}" for j in members for s in "jo"]

    assert await healthy.batches.tick(NOW + TALLY_SWEEP) == 4 + 1  # made, and the callback
    status = await healthy.batches.status(bid)
    assert (status.total, status.pending, status.success_st) == (2, 0, "1")
    assert rdb.hlen(K.tallies) == 0 and rdb.lrange(QueueKeys("cbs").queue, 0, -1) == ["callback-01"]
    assert rdb.zscore(keys.DUE_TALLIES, "default") is None  # no job of a batch left there
    rdb.hset(K.tallies, "member-0001/o", json.dumps([bid, "ok", "", NOW]))  # made again?
    rdb.zadd(keys.DUE_TALLIES, {"default": NOW})
    await healthy.batches.tick(NOW + TALLY_SWEEP)
    assert (await healthy.batches.status(bid)).pending == 0  # once each (the told set)


async def test_a_job_ended_before_its_batch_counted_it_does_not_complete_the_batch(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """A broker dies after a batch job's push script (its join kept in the queue only); the
    job is then fetched and ACKed through another broker before the batches loop came: its
    end brings its join along, so the batch does not count it done before it counted it in,
    and the success callback waits for the batch's other job."""
    dying = await split_manager(nursery, redis_url, rdb, DiesAfterScripts)
    healthy = await split_manager(nursery, redis_url, rdb, Redis)
    callback = {"jid": "callback-01", "jobtype": "Done", "queue": "cbs", "args": []}
    bid = await healthy.batches.new(json.dumps({"success": callback}).encode(), NOW)
    await dying.push(new("member-0001", custom={"bid": bid}), NOW)
    await healthy.push(new("member-0002", custom={"bid": bid}), NOW)
    await healthy.batches.commit(bid, NOW)
    fetched = await healthy.fetch(["default"], "w1", NOW)
    assert fetched is not None and fetched.jid == "member-0001"
    await healthy.ack("member-0001", "default", NOW, "w1")
    status = await healthy.batches.status(bid)
    assert (status.total, status.pending) == (2, 1)
    assert rdb.llen(QueueKeys("cbs").queue) == 0  # member-0002 has not run


class PushWaits(Redis):
    """A store whose next push script waits for `between` (another broker's whole push landing
    between this push's claim and its script)."""

    between: Callable[[], Awaitable[Any]] | None = None

    async def run(
        self, script: Script, keys_: Sequence[str], args: Sequence[Any], visit: Visit = None
    ) -> Any:
        if script.name == "push" and self.between is not None:
            step, self.between = self.between, None
            await step()
        return await super().run(script, keys_, args, visit)


async def test_two_brokers_pushing_one_callback_at_once_push_it_once(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """Both brokers fire a due callback; the second claims it between the first's claim and
    its script: the callback is stored once, and its jid stays indexed."""
    first = await split_manager(nursery, redis_url, rdb, PushWaits)
    second = await split_manager(nursery, redis_url, rdb, Redis)
    callback = {"jid": "callback-01", "jobtype": "Done", "queue": "cbs", "args": []}
    bid = await second.batches.new(json.dumps({"success": callback}).encode(), NOW)
    assert await second.store.batches.commit(bid, NOW, NOW + 1000) == 1  # due, not pushed
    assert isinstance(first.store.redis, PushWaits)
    first.store.redis.between = lambda: second.batches.fire(NOW)
    await first.batches.fire(NOW)
    assert rdb.lrange(QueueKeys("cbs").queue, 0, -1) == ["callback-01"]
    assert rdb.hget(keys.JIDS, "callback-01") == "cbs"
    assert (await second.batches.status(bid)).success_st == "1"


class InspectedFirst(Redis):
    """A store that runs `between` once, right after its first inspect script."""

    between: Callable[[], Awaitable[Any]] | None = None

    async def run(
        self, script: Script, keys_: Sequence[str], args: Sequence[Any], visit: Visit = None
    ) -> Any:
        reply = await super().run(script, keys_, args, visit)
        if script.name == "inspect" and self.between is not None:
            step, self.between = self.between, None
            await step()
        return reply


async def test_a_check_meeting_a_push_in_flight_leaves_it_alone(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """`hopper check --repair` meets a push between its claim and its script: the claim looks
    like an index entry without a job, but a first look in split mode changes nothing, and by
    the second look the job is there."""
    manager = await split_manager(nursery, redis_url, rdb, InspectedFirst)
    await manager.store.redis.run(CLAIM, CLAIM_KEYS, ("default", "", "", 1, "jid-0001", ""))
    assert isinstance(manager.store.redis, InspectedFirst)
    manager.store.redis.between = lambda: manager.push(new("jid-0001"), NOW)
    report = await Auditor(manager.store, repair=True, settle=0.01).run()
    assert report.problems == []
    assert rdb.hget(keys.JIDS, "jid-0001") == "default"
    assert rdb.lrange(K.queue, 0, -1) == ["jid-0001"]
