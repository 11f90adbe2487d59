"""The Redis Cluster connection (broker/store/cluster.py) on a real local cluster
(tests/cluster_rig.py): routing by slot, auto-pipelining per master, MOVED and ASK followed, a
master killed, a library missing on a master, cross-slot commands refused, bad URLs."""

import contextlib
import random
from collections.abc import Callable
from typing import Any

import pytest
import trio

from hopper_broker.errors import RedisUnavailable
from hopper_broker.store.address import ReplyError
from hopper_broker.store.cluster import ClusterPipeline
from hopper_broker.store.cluster_map import ClusterAddress, node_name
from hopper_broker.store.slots import RoutingError, key_slot
from tests.cluster_rig import ClusterRig

TIMEOUT = 5.0  # redis_timeout of the connections under test
LIBRARY = """#!lua name=clustertest
redis.register_function('put', function(keys, args)
  redis.call('SET', keys[1], args[1])
  return redis.call('GET', keys[1])
end)
"""


@pytest.fixture
async def cluster(redis_cluster: ClusterRig, nursery: trio.Nursery) -> ClusterPipeline:
    """A running ClusterPipeline on the flushed rig."""
    redis_cluster.flush()
    pipeline = ClusterPipeline(ClusterAddress(redis_cluster.url), lambda: TIMEOUT)
    await nursery.start(pipeline.run)
    return pipeline


async def test_a_call_after_the_pipeline_stopped_is_refused_as_unavailable(
    redis_cluster: ClusterRig,
) -> None:
    """A broker's connection says its last words (a worker leaving) after the store's
    pipeline stopped: refused like a call no node answers, not a crash."""
    pipeline = ClusterPipeline(ClusterAddress(redis_cluster.url), lambda: TIMEOUT)
    async with trio.open_nursery() as nursery:
        await nursery.start(pipeline.run)
        await pipeline.execute("SET", "last-words", "1")
        nursery.cancel_scope.cancel()
    with pytest.raises(RedisUnavailable):
        await pipeline.execute("GET", "last-words")


async def test_calls_while_the_pipeline_stops_are_refused_as_unavailable(
    redis_cluster: ClusterRig,
) -> None:
    """Connections keep calling while the pipeline stops: between its node connections
    ending and the pipeline's own end, a failed call must not start a map reload (the
    nursery no longer takes tasks), but be refused as unavailable."""
    for _ in range(10):
        await stop_while_called(ClusterPipeline(ClusterAddress(redis_cluster.url), lambda: TIMEOUT))


async def stop_while_called(pipeline: ClusterPipeline, callers: int = 20) -> None:
    """Start `pipeline`, stop it while `callers` tasks call it without a pause."""
    stopped = trio.Event()
    busy = trio.Event()
    answered = 0

    async def caller(key: str) -> None:
        nonlocal answered
        while not stopped.is_set():
            with contextlib.suppress(RedisUnavailable):
                await pipeline.execute("GET", key)
                answered += 1
                if answered >= 100:
                    busy.set()
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as calling:
        async with trio.open_nursery() as nursery:
            await nursery.start(pipeline.run)
            for n in range(callers):
                calling.start_soon(caller, f"key:{n}")
            await busy.wait()
            nursery.cancel_scope.cancel()
        stopped.set()


def keys_by_master(rig: ClusterRig, count: int = 1) -> dict[int, list[str]]:
    """`count` keys owned by each master (by port), found by CLUSTER SLOTS."""
    owners = {slot: port for a, b, port in rig.wait_ok() for slot in range(a, b + 1)}
    found: dict[int, list[str]] = {port: [] for port in rig.masters()}
    for n in range(100_000):
        key = f"key:{n}"
        keys = found[owners[key_slot(key)]]
        if len(keys) < count:
            keys.append(key)
        if all(len(keys) == count for keys in found.values()):
            return found
    raise AssertionError("keys for every master not found")


def in_slot(rig: ClusterRig, port: int, slot: int) -> set[str]:
    """The keys of a slot one node holds (asking for them by name would be redirected)."""
    found = rig.client(port).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    return {key.decode() for key in found}


def test_key_slot_matches_redis(redis_cluster: ClusterRig) -> None:
    special = ["", "{}", "{a}{b}", "a{}b{c}", "{", "}", "}{", "a}b{c}", "foo{}{bar}",
               "foo{{bar}}zap", "{user1000}.following", "ключ{δ}", "123456789"]  # fmt: skip
    rng = random.Random(17)
    keys: list[str | bytes] = [*special, b"\xff\x00{\x80}", b"\x00"]
    keys += ["".join(rng.choice("ab{}x") for _ in range(rng.randint(0, 8))) for _ in range(2000)]
    pipe = redis_cluster.client(redis_cluster.ports[0]).pipeline(transaction=False)
    for key in keys:
        pipe.execute_command("CLUSTER", "KEYSLOT", key)
    assert [key_slot(key) for key in keys] == [int(slot) for slot in pipe.execute()]
    assert key_slot("123456789") == 0x31C3 % 16384


async def test_keys_go_to_their_owner(redis_cluster: ClusterRig, cluster: ClusterPipeline) -> None:
    keys = [f"owned:{n}" for n in range(300)]
    for reply in await cluster.execute_many([("SET", key, key) for key in keys]):
        assert reply == b"OK"
    owners = {slot: port for a, b, port in redis_cluster.wait_ok() for slot in range(a, b + 1)}
    masters = redis_cluster.masters()
    assert [redis_cluster.keyslot(key) for key in keys] == [key_slot(key) for key in keys]
    stored = {p: {k.decode() for k in redis_cluster.client(p).keys("*")} for p in masters}
    assert stored == {p: {k for k in keys if owners[key_slot(k)] == p} for p in masters}
    assert all(redis_cluster.client(p).dbsize() == len(stored[p]) > 0 for p in masters)
    assert all(redis_cluster.client(owners[key_slot(k)]).exists(k) for k in keys)
    seconds, _ = await cluster.execute("TIME")  # no key: any master answers
    assert int(seconds) > 0


async def test_concurrent_callers_get_their_replies_in_order(cluster: ClusterPipeline) -> None:
    count = 10_000  # commands at once, each phase

    async def put(n: int) -> None:
        assert await cluster.execute("SET", f"n:{n}", n) == b"OK"

    async def read(n: int) -> None:  # three keys, most often of three masters
        wanted = [(n + step) % count for step in range(3)]
        replies = await cluster.execute_many([("GET", f"n:{m}") for m in wanted])
        assert replies == [str(m).encode() for m in wanted]

    for step, callers in ((put, range(count)), (read, range(0, count, 3))):
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for n in callers:
                    nursery.start_soon(step, n)
    assert len(set(cluster.map.masters)) == 3


async def test_execute_many_mixes_nodes(
    redis_cluster: ClusterRig, cluster: ClusterPipeline
) -> None:
    a, b, c = (keys[0] for keys in keys_by_master(redis_cluster).values())
    commands: list[tuple[Any, ...]] = [
        ("SET", a, "x"), ("SET", b, 2), ("TIME",), ("SET", c, 3),
        ("INCR", a), ("INCR", b), ("GET", c), ("GET", "none"),
    ]  # fmt: skip
    ok, ok2, time, ok3, error, incremented, value, missing = await cluster.execute_many(commands)
    assert (ok, ok2, ok3) == (b"OK", b"OK", b"OK") and len(time) == 2
    assert isinstance(error, ReplyError) and "not an integer" in error.reply
    assert (incremented, value, missing) == (3, b"3", None)


async def test_fcall_of_a_library_loaded_on_every_master(
    redis_cluster: ClusterRig, cluster: ClusterPipeline
) -> None:
    assert await cluster.execute("FUNCTION", "LOAD", "REPLACE", LIBRARY) == b"clustertest"
    by_master = keys_by_master(redis_cluster, 3)
    for port in by_master:
        assert redis_cluster.client(port).function_list("clustertest")
    keys = [key for keys in by_master.values() for key in keys]
    replies = await cluster.execute_many([("FCALL", "put", 1, key, f"v-{key}") for key in keys])
    assert replies == [f"v-{key}".encode() for key in keys]
    # A master without the library (as a node that joined after the load would be): it is
    # loaded there at the first "Function not found", and the call sent again.
    port, (key, *_) = next(iter(by_master.items()))
    redis_cluster.client(port).function_delete("clustertest")
    assert await cluster.execute("FCALL", "put", 1, key, "again") == b"again"
    assert redis_cluster.client(port).function_list("clustertest")
    reply = await cluster.execute("FCALL", "nothing", 1, key)
    assert isinstance(reply, ReplyError) and "Function not found" in reply.reply


async def test_cross_slot_commands_are_refused_before_sending(
    redis_cluster: ClusterRig, cluster: ClusterPipeline
) -> None:
    a, b = "cross:a", "cross:b"
    assert key_slot(a) != key_slot(b)
    refused: list[tuple[Any, ...]] = [("MSET", a, 1, b, 2), ("FCALL", "put", 2, a, b, "v"),
                                      ("ZUNIONSTORE", a, 1, b), ("RENAME", a, b)]  # fmt: skip
    for command in refused:
        with pytest.raises(RoutingError) as caught:
            await cluster.execute(*command)
        message = str(caught.value)
        assert "different hash slots" in message and "'cross:a'" in message and "\n" not in message
    with pytest.raises(RoutingError):
        await cluster.execute_many([("SET", "cross:first", 1), ("MSET", a, 1, b, 2)])
    with pytest.raises(RoutingError, match="MULTI cannot be sent"):
        await cluster.execute("MULTI")
    assert not any(redis_cluster.client(p).dbsize() for p in redis_cluster.masters())
    assert await cluster.execute("MSET", "{t}a", 1, "{t}b", 2) == b"OK"
    assert await cluster.execute("ZUNIONSTORE", "{t}z", 1, "{t}s") == 0


async def filled_slot(
    rig: ClusterRig, cluster: ClusterPipeline, tag: str, count: int
) -> tuple[list[str], int, int, int]:
    """`count` keys written in the slot of hash tag `tag`: the keys, the slot, the port of its
    master and of another master to move it to."""
    keys = [f"{{{tag}}}:{n}" for n in range(count)]
    await cluster.execute_many([("SET", key, key) for key in keys])
    slot = key_slot(keys[0])
    source = rig.owner(slot)
    return keys, slot, source, next(p for p in rig.masters() if p != source)


async def test_moved_is_followed_with_one_map_reload(
    redis_cluster: ClusterRig, cluster: ClusterPipeline
) -> None:
    keys, slot, source, target = await filled_slot(redis_cluster, cluster, "moved", 50)
    await trio.to_thread.run_sync(redis_cluster.move_slot, slot, target)
    before = cluster.refreshes
    assert cluster.map.owners[slot] == node_name("127.0.0.1", source)  # stale
    replies: dict[str, Any] = {}

    async def get(key: str) -> None:
        replies[key] = await cluster.execute("GET", key)

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(get, key)
    assert replies == {key: key.encode() for key in keys}
    assert cluster.refreshes == before + 1
    assert cluster.map.owners[slot] == node_name("127.0.0.1", target)


async def test_ask_is_followed_while_a_slot_moves(
    redis_cluster: ClusterRig, cluster: ClusterPipeline
) -> None:
    keys, slot, source, target = await filled_slot(redis_cluster, cluster, "ask", 20)
    redis_cluster.move_slot(slot, target, keys=5)  # half-way: 5 keys on the target
    try:
        moved, kept = (in_slot(redis_cluster, port, slot) for port in (target, source))
        assert len(moved) == 5 and len(kept) == 15 and not moved & kept
        before = cluster.refreshes
        assert await cluster.execute_many([("GET", key) for key in keys]) == [
            key.encode() for key in keys
        ]
        assert await cluster.execute("SET", "{ask}:new", "n") == b"OK"  # ASK: on the target
        assert "{ask}:new" in in_slot(redis_cluster, target, slot)
        assert cluster.refreshes == before  # ASK leaves the map alone
        assert cluster.map.owners[slot] == node_name("127.0.0.1", source)
    finally:
        await trio.to_thread.run_sync(redis_cluster.finish_move, slot, target)
    assert await cluster.execute("GET", keys[0]) == keys[0].encode()  # now MOVED
    assert cluster.map.owners[slot] == node_name("127.0.0.1", target)


async def test_a_killed_master_fails_calls_until_its_replica_is_promoted(
    redis_cluster: ClusterRig, cluster: ClusterPipeline
) -> None:
    by_master = keys_by_master(redis_cluster)
    victim, (key,) = next(iter(by_master.items()))
    other = next(keys[0] for port, keys in by_master.items() if port != victim)
    assert await cluster.execute("SET", key, "before") == b"OK"
    replica = redis_cluster.kill(victim)
    failures = 0
    try:
        with trio.fail_after(30):
            while True:
                with trio.fail_after(2 * TIMEOUT + 1):  # a call never hangs
                    try:
                        assert await cluster.execute("SET", key, "after") == b"OK"
                        break
                    except RedisUnavailable:
                        failures += 1
                    await _reply_or_unavailable(cluster.execute, "SET", other, "x")
                await trio.sleep(0.05)
        assert failures > 0
        assert cluster.map.owners[key_slot(key)] == node_name("127.0.0.1", replica)
        assert redis_cluster.client(replica).get(key) == b"after"
    finally:
        await trio.to_thread.run_sync(redis_cluster.promoted, replica)
        await trio.to_thread.run_sync(redis_cluster.restart_as_replica, victim)
    assert len(redis_cluster.masters()) == 3


async def _reply_or_unavailable(call: Callable[..., Any], *args: Any) -> None:
    """A call to a live master during a failover answers, or says Redis is unavailable
    (CLUSTERDOWN): never an error reply, never a hang."""
    with contextlib.suppress(RedisUnavailable):
        assert await call(*args) == b"OK"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:1", "starts with redis+cluster:// or rediss+cluster://"),
        ("redis+cluster://", "no host:port"),
        ("redis+cluster://h", "not host:port: 'h'"),
        ("redis+cluster://h:x", "not host:port: 'h:x'"),
        ("redis+cluster://h:0", "not host:port: 'h:0'"),
        ("redis+cluster://h:1,,h:2", "not host:port: ''"),
        ("redis+cluster://h:1/2", "no database"),
        ("redis+cluster://h:1?timeout=1", "no database"),
        ("redis+cluster://secret@h:1", "credentials go as user:password@ or :password@"),
        ("redis+cluster://u:secret@h:1/0", "redis+cluster://u:***@h:1/0: a cluster URL"),
    ],
)
def test_bad_urls_get_one_line(url: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        ClusterAddress(url)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "secret" not in str(caught.value)


def test_urls() -> None:
    plain = ClusterAddress("redis+cluster://127.0.0.1:7000,[::1]:7001/")
    assert plain.seeds == [("127.0.0.1", 7000), ("::1", 7001)] and not plain.tls
    assert plain.node("::1", 7001).url == "redis://[::1]:7001"
    secure = ClusterAddress("rediss+cluster://u:p%40ss@h:1")
    assert secure.tls and (secure.username, secure.password) == ("u", "p@ss")
    node = secure.node("10.0.0.2", 6380)
    assert (node.url, node.display) == (
        "rediss://u:p%40ss@10.0.0.2:6380",
        "rediss://u:***@10.0.0.2:6380",
    )
    assert ClusterAddress("redis+cluster://:pw@h:1").node("h", 1).password == "pw"
