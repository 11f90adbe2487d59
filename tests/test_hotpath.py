"""The plain path (PUSH, FETCH, ACK of a job with no rules) makes a known number of Redis calls
inside its scripts, and the shortcuts it takes leave the same state as the long way: a jid
archived again, alone or with others, replaces its entry in every index."""

import json

import pytest
import redis
import trio

from hopper_broker.manager import Manager
from hopper_broker.store import keys
from hopper_broker.store.audit import Auditor
from hopper_broker.store.connection import Address, Pipeline
from hopper_broker.store.jobs import Acked
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.redis import Store
from hopper_client.schema.jobs import FailPayload, MutateFilter, Mutation
from tests.test_manager import NOW, make_manager, new

K = QueueKeys("default")
# Redis calls inside each script for a plain job in a queue that holds other jobs, when nobody
# listens to events (docs/benchmarks.md, "The plain path"). A change that adds one adds work
# to every job: say so there.
PLAIN_CALLS = {"push": 6, "fetch": 6, "ack": 18}
NOT_IN_SCRIPTS = ("fcall", "config|resetstat", "info")


@pytest.fixture
async def manager(nursery: trio.Nursery, redis_url: str, rdb: redis.Redis) -> Manager:
    """A manager of its own (no loops: Redis sees only the calls a test makes)."""
    pipeline = Pipeline(Address(redis_url))
    await nursery.start(pipeline.run)
    rdb.set(keys.SCHEMA_KEY, keys.SCHEMA)  # the mark a broker writes when it starts
    return make_manager(Store(pipeline))


async def check(manager: Manager) -> None:
    """The store is sound (what `hopper check` runs)."""
    assert (await Auditor(manager.store).run()).problems == []


def calls_in_scripts(rdb: redis.Redis) -> dict[str, int]:
    """The calls Redis counted since the last reset, but the scripts' own FCALLs."""
    found = {
        name.removeprefix("cmdstat_"): int(stat["calls"])
        for name, stat in rdb.info("commandstats").items()
    }
    return {name: n for name, n in found.items() if name not in NOT_IN_SCRIPTS}


async def test_a_plain_job_makes_a_known_number_of_calls(
    manager: Manager, rdb: redis.Redis
) -> None:
    await manager.push(new("first-0001"), NOW)  # the library loaded, the queue not empty
    made: dict[str, dict[str, int]] = {}
    rdb.config_resetstat()
    await manager.push(new("plain-0001"), NOW)
    made["push"] = calls_in_scripts(rdb)
    for step in ("fetch", "ack"):
        rdb.config_resetstat()
        if step == "fetch":
            found = await manager.fetch(["default"], "", NOW)
            assert found is not None and found.jid == "first-0001"
        else:
            await manager.ack("first-0001", "default", NOW)
        made[step] = calls_in_scripts(rdb)
    assert {step: sum(c.values()) for step, c in made.items()} == PLAIN_CALLS, made
    assert rdb.zscore(K.finished, "first-0001") == NOW


async def archived_done(
    manager: Manager, rdb: redis.Redis, jid: str, jobtype: str, count: str
) -> None:
    """The jid's one history entry says done with `jobtype`, each of its two done indexes
    names it once, the done count is `count`, and the store is sound."""
    entry = json.loads(rdb.hget(K.history, jid) or "null")
    assert {"state": entry["state"], "jobtype": entry["jobtype"]} == {
        "state": "done",
        "jobtype": jobtype,
    }
    indexes = {
        key: [j for j in rdb.zrange(key, 0, -1) if j == jid]
        for key in sorted(rdb.scan_iter(match=f"{K.ended('*')}"))
    }
    named = {key: found for key, found in indexes.items() if found}
    assert named == {K.ended("done"): [jid], K.ended("done", jobtype): [jid]}
    assert (rdb.hget(keys.HISTORY_COUNT, "done") or "0") == count
    await check(manager)


async def run_once(manager: Manager, jid: str, jobtype: str) -> None:
    await manager.push(new(jid, jobtype=jobtype), NOW)
    found = await manager.fetch(["default"], "w1", NOW)
    assert found is not None and found.jid == jid
    await manager.ack(jid, "default", NOW, "w1")


async def test_a_jid_done_again_alone_replaces_its_entry(
    manager: Manager, rdb: redis.Redis
) -> None:
    await run_once(manager, "again-0001", "First")
    await run_once(manager, "again-0001", "Second")
    await archived_done(manager, rdb, "again-0001", "Second", count="1")


async def test_jids_done_again_together_replace_their_entries(
    manager: Manager, rdb: redis.Redis
) -> None:
    await run_once(manager, "again-0001", "First")
    for jid in ("again-0001", "fresh-0001"):
        await manager.push(new(jid, jobtype="Second"), NOW)
    for _ in range(2):
        assert await manager.fetch(["default"], "w1", NOW) is not None
    acks = [Acked(jid, "default", b"", "w1") for jid in ("again-0001", "fresh-0001")]
    assert await manager.ack_many(acks, NOW) == [None, None]
    await archived_done(manager, rdb, "again-0001", "Second", count="2")


async def test_a_dead_job_requeued_and_done_is_archived_done_only(
    manager: Manager, rdb: redis.Redis
) -> None:
    await manager.push(new("dies-0001", jobtype="Dies", retry=-1), NOW)
    assert await manager.fetch(["default"], "w1", NOW) is not None
    await manager.fail(FailPayload("dies-0001", "Boom", "it broke"), "default", NOW, "w1")
    assert json.loads(rdb.hget(K.history, "dies-0001") or "null")["state"] == "dead"
    requeue = Mutation(cmd="requeue", target="dead", filter=MutateFilter(jids=["dies-0001"]))
    await manager.mutator.run(requeue, NOW)
    assert await manager.fetch(["default"], "w1", NOW) is not None
    await manager.ack("dies-0001", "default", NOW, "w1")
    assert rdb.hget(keys.HISTORY_COUNT, "dead") == "0"
    await archived_done(manager, rdb, "dies-0001", "Dies", count="1")
