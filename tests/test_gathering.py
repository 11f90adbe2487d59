"""Lone commands of connections served at the same time run with one manager call, each still
answered with its own outcome; a lone client is not held back for company that never comes."""

import json

import redis
import trio
import trio.testing

from hopper_broker.app import App
from hopper_broker.gathering import LONELY, PROBE_EVERY, Gathering
from hopper_broker.manager import Manager
from hopper_broker.store import keys
from hopper_broker.store.jobs import Acked
from tests.test_hotpath import manager  # noqa: F401  (fixture)
from tests.test_manager import NOW, new
from tests.wire import Wire

TASKS = 10


class Recorder:
    """A run function that records the requests of each call; fails on a request 'boom'."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def run(self, items: list[str]) -> list[str]:
        self.calls.append(items)
        await trio.lowlevel.checkpoint()
        if "boom" in items:
            raise RuntimeError("boom")
        return [item.upper() for item in items]


async def ask_together(gathering: Gathering[str, str], items: list[str]) -> dict[str, object]:
    """Start one task per item at once; each one's result or exception."""
    results: dict[str, object] = {}

    async def ask(item: str) -> None:
        try:
            results[item] = await gathering.one(item)
        except RuntimeError as exc:
            results[item] = exc

    async with trio.open_nursery() as nursery:
        for item in items:
            nursery.start_soon(ask, item)
    return results


async def test_requests_of_tasks_ready_together_make_one_call() -> None:
    recorder = Recorder()
    items = [f"r{i}" for i in range(TASKS)]
    results = await ask_together(Gathering(recorder.run), items)
    assert results == {item: item.upper() for item in items}
    assert len(recorder.calls) == 1 and sorted(recorder.calls[0]) == sorted(items)


async def test_a_failed_call_fails_every_request_it_carried() -> None:
    recorder = Recorder()
    results = await ask_together(Gathering(recorder.run), ["a", "boom", "c"])
    assert all(isinstance(result, RuntimeError) for result in results.values())
    assert len(recorder.calls) == 1


async def test_a_cancelled_follower_leaves_the_others_answered() -> None:
    release = trio.Event()
    calls: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        calls.append(items)
        await release.wait()
        return [item.upper() for item in items]

    gathering: Gathering[str, str] = Gathering(run)
    results: dict[str, str] = {}
    scopes = {item: trio.CancelScope() for item in ("a", "b", "c")}

    async def ask(item: str) -> None:
        with scopes[item]:
            results[item] = await gathering.one(item)

    async with trio.open_nursery() as nursery:
        for item in scopes:
            nursery.start_soon(ask, item)
        await trio.testing.wait_all_tasks_blocked()  # one leads (in its call), two follow
        leader, gone, stays = calls[0]
        scopes[gone].cancel()
        release.set()
    assert results == {leader: leader.upper(), stays: stays.upper()}  # and `gone` still ran


async def test_a_lone_caller_stops_waiting_for_company_and_probes_now_and_then() -> None:
    recorder = Recorder()
    gathering: Gathering[str, str] = Gathering(recorder.run)
    for i in range(LONELY + PROBE_EVERY + 1):
        assert await gathering.one(f"r{i}") == f"R{i}"
    # each call ran alone; the first LONELY led (a checkpoint each), then PROBE_EVERY ran at
    # once, then one probed again
    assert len(recorder.calls) == LONELY + PROBE_EVERY + 1
    assert gathering.led == LONELY + 1
    together = await ask_together(gathering, ["x", "y", "z"])  # company again: gathered
    assert together == {"x": "X", "y": "Y", "z": "Z"}


async def test_gathered_acks_of_several_workers_each_leave_their_own_held_set(
    manager: Manager,  # noqa: F811
    rdb: redis.Redis,
) -> None:
    for n in range(4):
        await manager.push(new(f"jid-{n:04d}"), NOW)
    wids = ["w-one", "w-one", "w-two", "w-three"]
    for wid in wids:
        assert await manager.fetch(["default"], wid, NOW) is not None
    other = await manager.fetch_many(["default"], "w-two", NOW, 1, wait=False)
    assert other == []  # all four reserved
    acks = [Acked(f"jid-{n:04d}", "default", b"", wid) for n, wid in enumerate(wids)]
    acks.append(Acked("jid-0002", "default", b"", "w-three"))  # twice in one call: once
    assert await manager.ack_many(acks, NOW) == [None] * 5
    for wid in set(wids):
        assert rdb.smembers(keys.held(wid)) == set()
    assert rdb.zcard(keys.QueueKeys("default").working) == 0
    assert rdb.hget(keys.STATS, "processed") == "4"


async def test_lone_pushes_and_acks_of_many_connections_are_each_answered(
    broker: App, rdb: redis.Redis
) -> None:
    pushers = [await Wire.open(broker.port, hello={}) for _ in range(TASKS)]
    workers = [await Wire.open(broker.port, hello={"wid": f"w-{n}"}) for n in range(TASKS)]
    replies: list[object] = []

    async def call(wire: Wire, verb: str, arg: object) -> None:
        replies.append(await wire.call(verb, arg))

    async with trio.open_nursery() as nursery:  # ten lone PUSHes at once
        for n, wire in enumerate(pushers):
            job = {"jid": f"gather-{n:04d}", "jobtype": "Gathered", "args": [n]}
            nursery.start_soon(call, wire, "PUSH", job)
    assert replies == [b"OK"] * TASKS
    fetched = [json.loads(await wire.call("FETCH", "default"))["jid"] for wire in workers]
    assert sorted(fetched) == [f"gather-{n:04d}" for n in range(TASKS)]
    replies.clear()
    async with trio.open_nursery() as nursery:  # ten lone ACKs of ten workers at once
        for wire, jid in zip(workers, fetched, strict=True):
            nursery.start_soon(call, wire, "ACK", {"jid": jid})
    assert replies == [b"OK"] * TASKS
    assert rdb.hget(keys.STATS, "processed") == str(TASKS)
    for n in range(TASKS):
        assert rdb.smembers(keys.held(f"w-{n}")) == set()
