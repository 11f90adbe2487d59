"""Brokers on a real Redis Cluster (tests/cluster_rig.py), which they serve in split mode
(docs/cluster.md): two brokers share the cluster, jobs of queues on every master go through
PUSH, FETCH, ACK and FAIL on either; a FETCH waiting on one broker is woken by a push through
the other; push_replicas waits for a replica of each master; what split mode does not serve yet
is refused in one line."""

import json
import signal

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.slots import key_slot
from tests.cluster_rig import ClusterRig, wait_for
from tests.conftest import test_config
from tests.wire import Wire, WireError, job

QUEUES = [f"q{n}" for n in range(10)]


@pytest.fixture
async def brokers(redis_cluster: ClusterRig, nursery: trio.Nursery) -> list[App]:
    """Two in-process brokers on the flushed cluster rig."""
    redis_cluster.flush()
    started = []
    for _ in range(2):
        app = App(test_config(redis_cluster.url, fetch_timeout=10, push_replicas=1))
        await nursery.start(app.run)
        started.append(app)
    return started


async def test_two_brokers_serve_queues_on_every_master(
    brokers: list[App], redis_cluster: ClusterRig
) -> None:
    owners = {redis_cluster.owner(key_slot(QueueKeys(q).jobs)) for q in QUEUES}
    assert owners == set(redis_cluster.masters())  # the queues spread over every master
    pusher = await Wire.open(brokers[0].port, hello={"wid": "p"})
    worker = await Wire.open(brokers[1].port, hello={"wid": "w"})
    for i in range(30):
        assert await pusher.call("PUSH", job(f"jid-{i:04d}", queue=QUEUES[i % 10])) == b"OK"
    seen, acked = set(), []
    for i in range(30):
        fetched = json.loads(await worker.call("FETCH", " ".join(QUEUES)))
        seen.add(fetched["jid"])
        if i % 3:
            assert await worker.call("ACK", {"jid": fetched["jid"]}) == b"OK"
            acked.append(fetched["jid"])
        else:
            report = {"jid": fetched["jid"], "errtype": "E", "message": "m"}
            assert await worker.call("FAIL", report) == b"OK"
    assert len(seen) == 30
    info = json.loads(await pusher.call("INFO"))["faktory"]
    assert (info["total_processed"], info["total_failures"]) == (30, 10)
    assert info["sets"]["retries"] == 10 and info["total_enqueued"] == 0
    state = json.loads(await pusher.call("JOB", f"STATE {acked[0]}"))
    assert state["state"] == "done"


async def test_events_of_queues_on_every_master(brokers: list[App]) -> None:
    """A broker listens on one master and holds the gate on the others: it hears each job
    pushed through the other broker once, whichever master holds its queue."""
    listener = await Wire.open(brokers[0].port, hello={})
    assert await listener.call("EVENTS", "") == b"OK"
    pusher = await Wire.open(brokers[1].port, hello={})
    for i in range(30):
        assert await pusher.call("PUSH", job(f"event-{i:04d}", queue=QUEUES[i % 10])) == b"OK"
    with trio.fail_after(30):
        heard = [json.loads(await listener.reply()) for _ in range(30)]
    assert sorted(e["jid"] for e in heard) == [f"event-{i:04d}" for i in range(30)]
    assert {e["queue"] for e in heard} == set(QUEUES)
    assert await pusher.call("PUSH", job("event-last", queue=QUEUES[0])) == b"OK"
    with trio.fail_after(30):
        assert json.loads(await listener.reply())["jid"] == "event-last"  # no duplicate before it


async def test_a_fetch_is_woken_by_a_push_through_another_broker(brokers: list[App]) -> None:
    worker = await Wire.open(brokers[1].port, hello={"wid": "w"})
    pusher = await Wire.open(brokers[0].port, hello={"wid": "p"})
    waited: list[float] = []

    async def fetch() -> None:
        start = trio.current_time()
        assert await worker.call("FETCH", "late") is not None
        waited.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fetch)
        await trio.sleep(0.2)  # the FETCH waits (nothing to synchronise on: it is silent)
        await pusher.call("PUSH", job("jid-late", queue="late"))
    assert waited and waited[0] < 5  # woken, not at its fetch_timeout (10 s)


async def test_a_workflow_across_queues_in_one_pushb_is_refused(brokers: list[App]) -> None:
    w = await Wire.open(brokers[0].port, hello={"wid": "w"})
    graph = [
        job("jid-first", queue="a"),
        job("jid-then", queue="b", custom={"after": ["jid-first"]}),
    ]
    errors = json.loads(await w.call("PUSHB", graph))
    assert all("not served on a Redis Cluster" in errors[j["jid"]] for j in graph)
    assert await w.call("PUSH", job("jid-0002")) == b"OK"  # the connection serves on


async def test_info_counts_the_memory_of_every_master(
    brokers: list[App], redis_cluster: ClusterRig
) -> None:
    w = await Wire.open(brokers[0].port, hello={})
    shown = json.loads(await w.call("INFO"))["server"]["used_memory_mb"] * 2**20
    each = [
        redis.Redis(port=port).info("memory")["used_memory"] for port in redis_cluster.masters()
    ]
    assert abs(shown - sum(each)) <= 2**20  # rounded to a MB, and the masters' memory moves


async def test_push_replicas_waits_on_the_masters_a_push_wrote_only(
    redis_cluster: ClusterRig, nursery: trio.Nursery
) -> None:
    """A master whose replica stops answering holds back the pushes that wrote to it (their
    reply says so), not those of queues on other masters."""
    redis_cluster.flush()
    app = App(test_config(redis_cluster.url, push_replicas=1, push_replicas_timeout=0.5))
    await nursery.start(app.run)
    home = redis_cluster.owner(key_slot(keys.JIDS))  # a push writes there and to its queue's
    away = next(port for port in redis_cluster.masters() if port != home)
    on = {redis_cluster.owner(key_slot(QueueKeys(q).jobs)): q for q in QUEUES}
    (replica, *_) = redis_cluster.replicas(away)
    frozen = redis_cluster.processes[replica]
    frozen.send_signal(signal.SIGSTOP)
    try:
        w = await Wire.open(app.port, hello={})
        assert await w.call("PUSH", job("free-0001", queue=on[home])) == b"OK"
        with pytest.raises(WireError, match="copied to 0 of 1 Redis replicas"):
            await w.call("PUSH", job("held-0001", queue=on[away]))
    finally:
        frozen.send_signal(signal.SIGCONT)
        await trio.to_thread.run_sync(wait_for, redis_cluster.replicated, "replicas back")
