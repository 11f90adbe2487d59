"""Workflows in split mode (docs/cluster.md, Workflows): a dependant is registered with its
dependencies in other queues before its own push script, an end that must reach another queue
is a tally kept by its queue until the batches loop made it, and each end is counted once in
the dependant's queue, whatever comes twice or early. On one Redis, with a broker that dies
between the steps."""

import json

import redis
import trio

from hopper_broker.manager import Manager
from hopper_broker.store import keys
from hopper_broker.store.audit import Auditor
from hopper_broker.store.base import Redis
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.pushes import TALLY_SWEEP
from hopper_broker.store.workflows import LATER
from tests.test_manager import NOW, new
from tests.test_split import DiesAfterScripts, split_manager

SRC, DST = QueueKeys("src"), QueueKeys("dst")


async def done(manager: Manager, jid: str, result: bytes = b"") -> None:
    """Fetch `jid` (the next job of src) and ACK it."""
    fetched = await manager.fetch(["src"], "w1", NOW)
    assert fetched is not None and fetched.jid == jid
    await manager.ack(jid, "src", NOW, "w1", result)


async def test_ends_lost_with_their_outbox_are_settled_once(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """A broker dies after the ACK script of a dependency: its end, kept in the queue's
    tallies, reaches wf:due through another broker's batches loop and is settled there; the
    same end coming again counts nothing."""
    dying = await split_manager(nursery, redis_url, rdb, DiesAfterScripts)
    healthy = await split_manager(nursery, redis_url, rdb, Redis)
    for jid in ("src-0001", "src-0002"):
        await healthy.push(new(jid, queue="src"), NOW)
    await healthy.push(
        new("dst-0001", queue="dst", custom={"after": ["src-0001", "src-0002"]}), NOW
    )
    assert rdb.zscore(keys.DUE_TALLIES, "src") == NOW + TALLY_SWEEP  # announced first
    assert rdb.hget(keys.touched(keys.DUE_TALLIES), "src") == "2"  # and after registering
    await done(dying, "src-0001", b"7")
    assert rdb.zcard(keys.WF_DUE) == 0  # the outbox was lost
    assert len(rdb.hkeys(SRC.tallies)) == 1

    await healthy.batches.tick(NOW + TALLY_SWEEP)
    (entry,) = rdb.zrange(keys.WF_DUE, 0, -1)
    assert await healthy.workflows.settle(NOW + TALLY_SWEEP) == 1
    assert rdb.hget(DST.waits, "dst-0001") == '1 fail "src-0001":7'
    assert json.loads(rdb.hget(DST.unmet, "dst-0001")) == ["src-0002"]
    rdb.zadd(keys.WF_DUE, {entry: NOW})  # again
    assert await healthy.workflows.settle(NOW + TALLY_SWEEP) == 1
    assert rdb.hget(DST.waits, "dst-0001") == '1 fail "src-0001":7'  # counted once

    await done(healthy, "src-0002", b"8")
    await healthy.workflows.settle(NOW)
    assert rdb.lrange(DST.queue, 0, -1) == ["dst-0001"]
    record = json.loads(rdb.hget(DST.jobs, "dst-0001"))
    assert record["custom"]["_results"] == {"src-0001": 7, "src-0002": 8}
    assert not rdb.exists(DST.waits, DST.unmet, DST.blocked)
    assert (await Auditor(healthy.store, repair=True, settle=0.01).run()).problems != []
    assert (await Auditor(healthy.store, settle=0.01).run()).problems == []


async def test_a_registration_left_by_a_refused_push_settles_nothing(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """A push registers its dependant with a dependency, then is refused (another dependency
    is unknown); the jid pushed again waits for another job: the first dependency's end does
    not count for it."""
    manager = await split_manager(nursery, redis_url, rdb, Redis)
    for jid in ("src-0001", "src-0002"):
        await manager.push(new(jid, queue="src"), NOW)
    refused = new("dst-0001", queue="dst", custom={"after": ["src-0001", "nope"]})
    error = (await manager.push_many([refused], NOW))[0]
    assert error is not None and "unknown dependency nope" in str(error)
    assert json.loads(rdb.hget(SRC.dependants, "src-0001")) == ["dst", "dst-0001"]
    assert rdb.hget(keys.JIDS, "dst-0001") is None  # its claim given back
    await manager.push(new("dst-0001", queue="dst", custom={"after": ["src-0002"]}), NOW)
    await done(manager, "src-0001")
    assert rdb.hlen(SRC.tallies) == 0  # its outbox marked the end due: the sweep will not
    await manager.workflows.settle(NOW)
    assert rdb.zscore(DST.blocked, "dst-0001") is not None
    assert rdb.zcard(keys.WF_DUE) == 0
    await done(manager, "src-0002")
    await manager.workflows.settle(NOW)
    assert rdb.lrange(DST.queue, 0, -1) == ["dst-0001"]


async def test_an_end_for_a_dependant_still_on_its_way_waits_for_it(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """An end due for a dependant whose jid is claimed but whose push script has not run yet
    stays in wf:due, put off; once the claim is gone it is dropped."""
    manager = await split_manager(nursery, redis_url, rdb, Redis)
    entry = json.dumps(["ok", "dst", "dst-0001", "src-0001", "1"], separators=(",", ":"))
    rdb.hset(keys.JIDS, "dst-0001", "dst")
    rdb.zadd(keys.WF_DUE, {entry: NOW})
    assert await manager.workflows.settle(NOW) == 0
    assert rdb.zscore(keys.WF_DUE, entry) == NOW + LATER
    rdb.hdel(keys.JIDS, "dst-0001")  # the push was refused: its claim given back
    assert await manager.workflows.settle(NOW + LATER) == 1
    assert rdb.zcard(keys.WF_DUE) == 0


async def test_check_finds_a_dependant_no_end_will_come_to(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """A dependency that no longer names its dependant (its registration lost): `hopper
    check` reports the dependant blocked for good after its second look, and `--repair` marks
    the end due, which the workflows loop settles under the job's policy."""
    manager = await split_manager(nursery, redis_url, rdb, Redis)
    await manager.push(new("src-0001", queue="src"), NOW)
    await manager.push(new("dst-0001", queue="dst", custom={"after": ["src-0001"]}), NOW)
    assert (await Auditor(manager.store, settle=0.01).run()).problems == []
    rdb.hdel(SRC.dependants, "src-0001")
    report = await Auditor(manager.store, repair=True, settle=0.01).run()
    assert [(p.kind, p.jid, p.repaired) for p in report.problems] == [
        ("blocked for good", "dst-0001", True)
    ]
    assert await manager.workflows.settle(NOW) == 1
    state, _ = await manager.tracking.find("dst-0001")
    assert state.state == "cancelled"
    assert (await Auditor(manager.store, settle=0.01).run()).problems == []


async def test_a_dependency_of_the_same_queue_is_judged_by_its_queue(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    """A broker died after a dependency's ACK script, so the index still names it live; a job
    of its queue pushed after it finds it done there (with its result) and runs at once."""
    dying = await split_manager(nursery, redis_url, rdb, DiesAfterScripts)
    healthy = await split_manager(nursery, redis_url, rdb, Redis)
    await healthy.push(new("dst-dep-01", queue="dst"), NOW)
    fetched = await dying.fetch(["dst"], "w1", NOW)
    assert fetched is not None
    await dying.ack("dst-dep-01", "dst", NOW, "w1", b'"r"')
    assert rdb.hget(keys.JIDS, "dst-dep-01") == "dst"  # the ~dst mark was lost
    await healthy.push(new("dst-0001", queue="dst", custom={"after": ["dst-dep-01"]}), NOW)
    assert rdb.lrange(DST.queue, 0, -1) == ["dst-0001"]
    record = json.loads(rdb.hget(DST.jobs, "dst-0001"))
    assert record["custom"]["_results"] == {"dst-dep-01": "r"}
