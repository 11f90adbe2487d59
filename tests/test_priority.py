"""Priorities within a queue (a Hopper extension): higher first, first come first served within
a priority, whether given as `priority` or `custom.priority`, on every path a job waits by
(push, schedule, retry, release), and for the operator commands that touch waiting jobs."""

import json
from typing import Any

import pytest

from hopper_broker.app import App
from hopper_client import AsyncClient
from tests.conftest import check_store, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def fetch_all(w: Wire, queue: str = "default") -> list[str]:
    jids = []
    for _ in range(100):
        reply = await w.call("FETCH", queue)
        if reply is None:
            return jids
        jid = json.loads(reply)["jid"]
        jids.append(jid)
        await w.call("ACK", {"jid": jid})
    raise AssertionError("the queue did not run dry")


async def test_higher_first_and_fifo_within_a_priority(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    pushes: list[dict[str, Any]] = [
        job("plain-001"),
        job("low-00001", priority=2),
        job("high-0001", priority=9),
        job("plain-002", priority=5),
        job("mid-00001", custom={"priority": 7}),
        job("high-0002", priority=9),
        job("low-00002", priority=2),
        job("lowest-01", priority=1),
    ]
    for pushed in pushes[:4]:
        await w.call("PUSH", pushed)
    assert json.loads(await w.call("PUSHB", pushes[4:])) == {}
    order = await fetch_all(w)
    assert order == [
        "high-0001",
        "high-0002",
        "mid-00001",
        "plain-001",
        "plain-002",
        "low-00001",
        "low-00002",
        "lowest-01",
    ]
    check_store(store_url)


async def test_fetching_many_at_once_keeps_the_order(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSHB", [job(f"p{p}-{i:05d}", priority=p) for i in range(3) for p in (1, 5, 9)])
    await w.send(b"FETCH default\r\n" * 9)
    got = [json.loads(await w.reply())["jid"][:2] for _ in range(9)]
    assert got == ["p9"] * 3 + ["p5"] * 3 + ["p1"] * 3


async def test_scheduled_and_retried_jobs_keep_their_priority(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("plain-001"))
    await w.call("PUSH", job("retried-1", priority=8))
    assert json.loads(await w.call("FETCH", "default"))["jid"] == "retried-1"
    await w.call("FAIL", {"jid": "retried-1", "message": "again"})
    requeue = {"cmd": "requeue", "target": "retries", "filter": {"jids": ["retried-1"]}}
    await w.call("MUTATE", requeue)
    assert await fetch_all(w) == ["retried-1", "plain-001"]
    check_store(store_url)


async def test_cancel_remove_and_info_see_prioritized_jobs(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSHB", [job("urgent-01", priority=9), job("urgent-02", priority=9)])
    await w.call("PUSH", job("plain-001"))
    assert json.loads(await w.call("INFO"))["faktory"]["queues"]["default"] == 3
    assert json.loads(await w.call("JOB", "STATE urgent-01"))["state"] == "queued"
    assert json.loads(await w.call("JOB", "CANCEL urgent-01"))["state"] == "cancelled"
    assert await w.call("QUEUE", "REMOVE default") == b"OK"
    assert await w.call("FETCH", "default") is None
    check_store(store_url)


async def test_bad_priorities_are_refused(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    for bad in (job("badprio-1", priority=10), job("badprio-2", custom={"priority": "high"})):
        with pytest.raises(WireError, match="priority must be a whole number from 1 to 9"):
            await w.call("PUSH", bad)


async def test_the_client_pushes_with_a_priority(broker: App) -> None:
    async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as client:
        await client.push("work", [1])
        urgent = await client.push("work", [2], priority=9)
        fetched = await client.fetch()
        assert fetched is not None and fetched.jid == urgent and fetched.priority == 9


async def test_flush_takes_prioritized_jobs_too(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSHB", [job(f"flushed-{i:02d}", priority=3) for i in range(5)])
    await w.call("FLUSH")
    assert await w.call("FETCH", "default") is None
    assert json.loads(await w.call("JOB", "STATE flushed-00"))["state"] == "unknown"
    check_store(store_url)


async def test_latency_counts_prioritized_jobs_too(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("waiting-1", priority=2))  # the list itself stays empty

    async def waited() -> bool:
        return json.loads(await w.call("QUEUE", "LATENCY default"))["default"] > 0.05

    await eventually(waited)
    assert json.loads(await w.call("QUEUE", "LATENCY empty")) == {"empty": 0}
