"""Workflows over the wire: jobs with dependencies (custom.after) run in dependency order with
their dependencies' results, a dying dependency under both policies, refused cycles and unknown
dependencies, a graph pushed atomically with PUSHB, cancels, and dependants in other queues
released once with two brokers; as on one Redis, in split mode and on the cluster rig (where a
graph across queues in one PUSHB is refused: docs/cluster.md)."""

import json
from typing import Any

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.audit import Auditor
from hopper_broker.store.cluster import connection_for
from hopper_broker.store.keys import WF_DUE, QueueKeys
from hopper_broker.store.redis import Store
from hopper_broker.workflows import NOT_SPLIT
from hopper_client import AsyncClient, Client, make_job, results_of
from tests.conftest import StartBroker, check_store, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]
ONE_REDIS = pytest.mark.parametrize("store_mode", ["one"], indirect=True)  # not split


def after(jid: str, deps: list[str], policy: str = "", **fields: Any) -> dict[str, Any]:
    custom: dict[str, Any] = {"after": deps}
    if policy:
        custom["after_policy"] = policy
    return job(jid, custom=custom, **fields)


async def take(w: Wire, queue: str = "default") -> dict[str, Any] | None:
    found = await w.call("FETCH", queue)
    return None if found is None else json.loads(found)


async def state(w: Wire, jid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"STATE {jid}"))
    return found


async def test_three_levels_run_in_order_with_results(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-a-1"))
    await w.call("PUSH", job("jobs-a-2"))
    await w.call("PUSH", after("jobs-b-1", ["jobs-a-1", "jobs-a-2"]))
    await w.call("PUSH", after("jobs-c-1", ["jobs-b-1"]))
    assert (await state(w, "jobs-b-1"))["state"] == "blocked"
    graph = json.loads(await w.call("JOB", "WORKFLOW jobs-c-1"))
    assert graph["states"] == {
        "jobs-c-1": "blocked",
        "jobs-b-1": "blocked",
        "jobs-a-1": "queued",
        "jobs-a-2": "queued",
    }
    assert graph["after"] == {"jobs-c-1": ["jobs-b-1"], "jobs-b-1": ["jobs-a-1", "jobs-a-2"]}
    first = await take(w)
    assert first is not None and first["jid"] == "jobs-a-1"
    await w.call("ACK", {"jid": "jobs-a-1", "result": {"n": 1}})
    second = await take(w)
    assert second is not None and second["jid"] == "jobs-a-2"
    assert await take(w) is None  # b-1 still waits for a-2
    await w.call("ACK", {"jid": "jobs-a-2", "result": [2]})
    b = await take(w)
    assert b is not None and b["jid"] == "jobs-b-1"
    assert b["custom"]["_results"] == {"jobs-a-1": {"n": 1}, "jobs-a-2": [2]}
    await w.call("ACK", {"jid": "jobs-b-1", "result": "bee"})
    c = await take(w)
    assert c is not None and c["custom"]["_results"] == {"jobs-b-1": "bee"}
    await w.call("ACK", {"jid": "jobs-c-1"})
    graph = json.loads(await w.call("JOB", "WORKFLOW jobs-c-1"))
    assert set(graph["states"].values()) == {"done"}
    # a dependency that already finished counts as met at push, with its result
    await w.call("PUSH", after("jobs-d-1", ["jobs-b-1"]))
    d = await take(w)
    assert d is not None and d["custom"]["_results"] == {"jobs-b-1": "bee"}
    await w.call("ACK", {"jid": "jobs-d-1"})
    check_store(store_url)


@pytest.mark.parametrize("policy", ["fail", "run"])
async def test_a_dying_dependency(broker: App, store_url: str, policy: str) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job(f"jobs-dies-{policy}", retry=0))
    await w.call("PUSH", after(f"jobs-next-{policy}", [f"jobs-dies-{policy}"], policy))
    await w.call("PUSH", after(f"jobs-last-{policy}", [f"jobs-next-{policy}"]))
    got = await take(w)
    assert got is not None
    await w.call("FAIL", {"jid": got["jid"], "message": "boom"})
    if policy == "fail":
        assert (await state(w, f"jobs-next-{policy}"))["state"] == "cancelled"
        assert (await state(w, f"jobs-last-{policy}"))["state"] == "cancelled"  # cascades
        assert await take(w) is None
        with pytest.raises(WireError, match="did not succeed"):
            await w.call("PUSH", after(f"jobs-late-{policy}", [f"jobs-dies-{policy}"]))
    else:
        released = await take(w)
        assert released is not None and released["jid"] == f"jobs-next-{policy}"
        assert "_results" not in released["custom"]
        await w.call("ACK", {"jid": released["jid"]})
        last = await take(w)
        assert last is not None and last["jid"] == f"jobs-last-{policy}"
        await w.call("ACK", {"jid": last["jid"]})
    check_store(store_url)


async def test_cancel_of_a_dependency_and_of_a_blocked_job(
    broker: App, store_url: str, rdb: redis.Redis
) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-x-1", at="2099-01-01T00:00:00Z"))
    await w.call("PUSH", after("jobs-y-1", ["jobs-x-1"]))
    await w.call("PUSH", after("jobs-z-1", ["jobs-y-1"], "run"))
    await w.call("JOB", "CANCEL jobs-y-1")  # a blocked job: its dependants apply their policy
    z = await eventually(lambda: take(w))
    assert z["jid"] == "jobs-z-1"
    await w.call("ACK", {"jid": "jobs-z-1"})
    await w.call("JOB", "CANCEL jobs-x-1")
    assert rdb.zcard(QueueKeys("default").blocked) == 0
    assert rdb.hlen(QueueKeys("default").dependants) == 0
    check_store(store_url)


async def test_cycles_and_unknown_dependencies_are_refused(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match="unknown dependency nope"):
        await w.call("PUSH", after("jobs-u-1", ["nope"]))
    with pytest.raises(WireError, match="depends on itself"):
        await w.call("PUSH", after("jobs-self-1", ["jobs-self-1"]))
    with pytest.raises(WireError, match="after_policy"):
        await w.call("PUSH", after("jobs-p-1", ["jobs-u-1"], "maybe"))
    cycle = [
        after("jobs-k-1", ["jobs-k-3"]),
        after("jobs-k-2", ["jobs-k-1"]),
        after("jobs-k-3", ["jobs-k-2"]),
        job("jobs-k-4"),
    ]
    errors = json.loads(await w.call("PUSHB", cycle))
    assert set(errors) == {"jobs-k-1", "jobs-k-2", "jobs-k-3", "jobs-k-4"}
    assert "cycle" in errors["jobs-k-1"]
    assert (await state(w, "jobs-k-4"))["state"] == "unknown"
    check_store(store_url)


async def test_a_graph_in_one_pushb_is_all_or_nothing(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-taken-1"))
    graph = [
        after("jobs-g-3", ["jobs-g-1", "jobs-g-2"]),
        job("jobs-g-1"),
        after("jobs-g-2", ["jobs-g-1"]),
        job("jobs-taken-1"),
    ]
    errors = json.loads(await w.call("PUSHB", graph))
    assert "already in use" in errors["jobs-taken-1"]
    assert set(errors) == {"jobs-g-1", "jobs-g-2", "jobs-g-3", "jobs-taken-1"}
    assert (await state(w, "jobs-g-1"))["state"] == "unknown"
    graph[-1] = after("jobs-g-4", ["jobs-g-3", "jobs-taken-1"])
    assert json.loads(await w.call("PUSHB", graph)) == {}
    order = []
    while (got := await take(w)) is not None:
        order.append(got["jid"])
        await w.call("ACK", {"jid": got["jid"], "result": got["jid"]})
    assert order == ["jobs-taken-1", "jobs-g-1", "jobs-g-2", "jobs-g-3", "jobs-g-4"]
    check_store(store_url)


@ONE_REDIS
async def test_a_graph_across_queues_is_one_atomic_push(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-busy-1", queue="mail"))
    graph = [  # render -> (mail, bill) -> report, in three queues, listed in any order
        after("jobs-x-report", ["jobs-x-mail", "jobs-x-bill"], queue="reports"),
        after("jobs-x-mail", ["jobs-x-render"], queue="mail"),
        job("jobs-x-render", queue="render"),
        after("jobs-x-bill", ["jobs-x-render"], queue="reports"),
        job("jobs-busy-1", queue="render"),  # in use (in mail): every job refused
    ]
    errors = json.loads(await w.call("PUSHB", graph))
    assert "already in use" in errors["jobs-busy-1"]
    assert set(errors) == {j["jid"] for j in graph}
    assert all("another job of the workflow" in errors[j["jid"]] for j in graph[:4])
    for j in graph[:4]:
        assert (await state(w, j["jid"]))["state"] == "unknown"
    graph[-1] = after("jobs-x-audit", ["jobs-x-render"], queue="mail")
    assert json.loads(await w.call("PUSHB", graph)) == {}
    assert (await state(w, "jobs-x-mail"))["state"] == "blocked"
    assert await take(w, "mail") is not None  # jobs-busy-1: the only one ready there
    await w.call("ACK", {"jid": "jobs-busy-1"})
    order = []
    for queue in ("render", "mail", "reports", "mail", "reports"):
        got = await take(w, queue)
        assert got is not None, (queue, order)
        order.append(got["jid"])
        await w.call("ACK", {"jid": got["jid"], "result": got["jid"]})  # releases before +OK
    assert order[0] == "jobs-x-render" and order[-1] == "jobs-x-report"
    assert set(order[1:4]) == {"jobs-x-mail", "jobs-x-audit", "jobs-x-bill"}
    assert (await state(w, "jobs-x-report"))["state"] == "done"
    check_store(store_url)


@ONE_REDIS
async def test_a_graph_naming_one_jid_in_two_queues_stores_nothing(
    broker: App, rdb: redis.Redis, store_url: str
) -> None:
    w = await Wire.open(broker.port, hello={})
    graph = [  # jobs-d-1 twice, in two queues: refused, and so is every other job
        job("jobs-d-1", queue="left"),
        job("jobs-d-1", queue="right"),
        after("jobs-d-2", ["jobs-d-1"], queue="third"),
    ]
    errors = json.loads(await w.call("PUSHB", graph))
    assert set(errors) == {"jobs-d-1", "jobs-d-2"}
    assert "another job of the workflow" in errors["jobs-d-2"]
    for jid in ("jobs-d-1", "jobs-d-2"):
        assert (await state(w, jid))["state"] == "unknown"
    assert not any(rdb.exists(QueueKeys(q).jobs) for q in ("left", "right", "third"))
    check_store(store_url)


async def test_a_graph_whose_dependant_is_invalid_stores_nothing(
    broker: App, store_url: str, store_mode: str
) -> None:
    w = await Wire.open(broker.port, hello={})
    for queue in ("other", "default")[store_mode != "one" :]:  # across queues, and in one
        graph = [
            job("jobs-i-first"),
            after("jobs-i-then", ["jobs-i-first"], queue=queue, at="not a time"),
        ]
        errors = json.loads(await w.call("PUSHB", graph))
        assert "invalid timestamp" in errors["jobs-i-then"]
        assert "another job of the workflow" in errors["jobs-i-first"], queue
        assert (await state(w, "jobs-i-first"))["state"] == "unknown"
    check_store(store_url)


async def test_a_graph_that_replaces_a_dependency_stores_nothing(
    broker: App, store_url: str, store_mode: str
) -> None:
    w = await Wire.open(broker.port, hello={})
    unique = {"unique_for": 60, "unique_until": "replace"}
    # across queues (one Redis), and in the replaced job's own queue
    for other in ("other", "sync")[store_mode != "one" :]:
        await w.call("PUSH", job("jobs-r-held", "Sync", args=[1], queue="sync", custom=unique))
        graph = [  # jobs-r-new takes jobs-r-held's place: jobs-r-after's dependency fails
            job("jobs-r-new", "Sync", args=[1], queue="sync", custom=unique),
            after("jobs-r-after", ["jobs-r-held", "jobs-r-new"], queue=other),
        ]
        errors = json.loads(await w.call("PUSHB", graph))
        assert "jobs-r-held did not succeed" in errors["jobs-r-after"], other
        assert "another job of the workflow" in errors["jobs-r-new"]
        assert (await state(w, "jobs-r-held"))["state"] == "queued"
        for j in graph:
            assert (await state(w, j["jid"]))["state"] == "unknown"
        graph[1] = after("jobs-r-after", ["jobs-r-held", "jobs-r-new"], "run", queue=other)
        assert json.loads(await w.call("PUSHB", graph)) == {}  # policy run: met, all stored
        assert (await state(w, "jobs-r-held"))["state"] == "replaced"
        assert (await state(w, "jobs-r-after"))["state"] == "blocked"
        await w.call("FLUSH")
    check_store(store_url)


async def test_a_graph_across_queues_is_refused_when_split(
    broker: App, store_url: str, store_mode: str
) -> None:
    """Split mode cannot store jobs of several slots all or nothing: each job of such a graph
    is refused, saying why; pushed one PUSH at a time, dependencies first, they run."""
    if store_mode == "one":
        pytest.skip("one Redis stores it (test_a_graph_across_queues_is_one_atomic_push)")
    w = await Wire.open(broker.port, hello={})
    graph = [job("jobs-s-first", queue="first"), after("jobs-s-then", ["jobs-s-first"])]
    errors = json.loads(await w.call("PUSHB", graph))
    assert errors == {j["jid"]: f"WORKFLOW {NOT_SPLIT}" for j in graph}
    assert (await state(w, "jobs-s-first"))["state"] == "unknown"
    for one in graph:
        await w.call("PUSH", one)
    first = await take(w, "first")
    assert first is not None
    await w.call("ACK", {"jid": first["jid"], "result": 1})
    then = await eventually(lambda: take(w))
    assert then["custom"]["_results"] == {"jobs-s-first": 1}
    await w.call("ACK", {"jid": then["jid"]})
    check_store(store_url)


async def test_dependants_in_other_queues_released_once_by_two_brokers(
    start_broker: StartBroker, rdb: redis.Redis, store_url: str
) -> None:
    brokers = [await start_broker(), await start_broker()]
    wires = [await Wire.open(b.port, hello={"wid": f"w{i}"}) for i, b in enumerate(brokers)]
    for n in range(20):
        await wires[0].call("PUSH", job(f"jobs-src-{n}", queue="src"))
        await wires[1].call("PUSH", after(f"jobs-dst-{n}", [f"jobs-src-{n}"], queue="dst"))
        await wires[1].call("PUSH", after(f"jobs-gone-{n}", [f"jobs-src-{n}"], "run", queue="dst2"))

    async def work(i: int) -> None:
        for _ in range(10):
            got = await take(wires[i], "src")
            assert got is not None
            await wires[i].call("ACK", {"jid": got["jid"], "result": i})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(work, 0)
        nursery.start_soon(work, 1)
    await eventually(lambda: rdb.zcard(WF_DUE) == 0)
    seen = []
    for queue in ("dst", "dst2"):
        while (got := await take(wires[len(seen) % 2], queue)) is not None:
            seen.append(got["jid"])
            assert list(got["custom"]["_results"]) == [got["custom"]["after"][0]]
            await wires[0].call("ACK", {"jid": got["jid"]})
    assert sorted(seen) == sorted(
        [f"jobs-dst-{n}" for n in range(20)] + [f"jobs-gone-{n}" for n in range(20)]
    )
    assert rdb.zcard(QueueKeys("dst").blocked) == 0
    check_store(store_url)


async def test_flush_forgets_workflows(broker: App, rdb: redis.Redis, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-f-1"))
    await w.call("PUSH", after("jobs-f-2", ["jobs-f-1"], queue="later"))
    await w.call("FLUSH")
    for queue in ("default", "later"):
        k = QueueKeys(queue)
        assert not rdb.exists(k.blocked, k.waits, k.dependants)
    check_store(store_url)


async def test_the_bundled_clients(broker: App, store_url: str) -> None:
    target = f"tcp://127.0.0.1:{broker.port}"

    def work() -> None:
        with Client(target) as client:
            first = client.push("work", jid="cli-first-1")
            client.push("work", jid="cli-second-1", after=[first], after_policy="run")
            assert client.state("cli-second-1").state == "blocked"
            got = client.fetch()
            assert got is not None and got.jid == first
            client.ack(first)
            released = client.fetch()
            assert released is not None and results_of(released) == {first: None}
            client.ack(released.jid)

    await trio.to_thread.run_sync(work)
    async with AsyncClient(target) as client:
        root = make_job("work", jid="cli-root-01")
        leaf = make_job("work", jid="cli-leaf-01", after=[root.jid])
        assert await client.push_workflow([leaf, root]) == {}
        got = await client.fetch()
        assert got is not None and got.jid == root.jid
        await client.ack(root.jid)
        got = await client.fetch()
        assert got is not None and results_of(got) == {root.jid: None}
        await client.ack(got.jid)
    check_store(store_url)


async def test_hopper_check_sees_blocked_jobs_and_stray_waits(
    broker: App, nursery: trio.Nursery, store_url: str, rdb: redis.Redis, store_mode: str
) -> None:
    connection = connection_for(store_url, lambda: 10.0)
    await nursery.start(connection.run)
    store = Store(connection, split=store_mode != "one")
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-h-1"))
    await w.call("PUSH", after("jobs-h-2", ["jobs-h-1"]))
    assert (await Auditor(store).run()).problems == []  # a blocked job is in its place
    rdb.hset(QueueKeys("default").waits, "jobs-h-9", "1 fail ")
    found = await Auditor(store, repair=True).run()
    assert [(p.kind, p.jid) for p in found.problems] == [
        ("dependencies without blocked job", "jobs-h-9")
    ]
    assert found.clean and (await Auditor(store).run()).problems == []
    await w.call("QUEUE", "REMOVE default")  # the blocked job stays, the queue listed
    assert rdb.sismember("hopper:g:{g}:queues", "default")
    await w.call("FLUSH")
    assert not rdb.exists(QueueKeys("default").blocked)
