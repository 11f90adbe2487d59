"""Batches (Faktory Enterprise) over the wire: BATCH NEW / OPEN / COMMIT / STATUS, callbacks
(complete, then success), failures and dead jobs, commit rules, re-opening, parent and child,
several brokers racing, duplicate ACKs and the expiry of uncommitted batches; as on one Redis,
in split mode and on the cluster rig."""

import json
import logging
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.keys import BATCHES_DUE, BATCHES_EXPIRY, QueueKeys, batch
from tests.conftest import StartBroker, check_store, clean_env, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def new(w: Wire, **spec: Any) -> str:
    bid: bytes = await w.call("BATCH", "NEW " + json.dumps(spec))
    return bid.decode()


async def status(w: Wire, bid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("BATCH", f"STATUS {bid}"))
    return found


async def states(w: Wire, bid: str) -> tuple[str, str]:
    found = await status(w, bid)
    return found["complete_st"], found["success_st"]


async def run(w: Wire, queue: str = "default", fail: bool = False) -> dict[str, Any]:
    """Fetch one job of `queue` and ACK it (or FAIL it)."""
    fetched: dict[str, Any] = json.loads(await w.call("FETCH", queue))
    if fail:
        await w.call("FAIL", {"jid": fetched["jid"], "message": "boom"})
    else:
        await w.call("ACK", {"jid": fetched["jid"]})
    return fetched


def member(jid: str, bid: str, **fields: Any) -> dict[str, Any]:
    return job(jid, custom={"bid": bid}, **fields)


CALLBACKS = {
    "complete": job("complete-cb", "Done", queue="cbs"),
    "success": job("success-cb", "Yay", queue="cbs"),
}


async def test_shapes_and_errors(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={})
    bid = await new(w, bid="", description="Import", success=job("succ-1234", "S", args=None))
    assert re.fullmatch(r"b-[A-Za-z0-9_-]{14}", bid)
    found = await status(w, bid)
    assert list(found) == [
        "bid",
        "description",
        "created_at",
        "total",
        "pending",
        "failed",
        "complete_st",
        "success_st",
    ]
    assert (found["bid"], found["description"], found["total"], found["complete_st"]) == (
        bid,
        "Import",
        0,
        "",
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", found["created_at"])
    assert await w.call("BATCH", f"OPEN {bid}") == bid.encode()
    assert await w.call("BATCH", f"COMMIT {bid}") == b"OK"

    ghost = "b-AAAAAAAAAAAAAA"
    errors = [
        ("NEW {}", "ERR BATCH NEW needs a success or complete callback job"),
        ('NEW {"bid":"b-x","success":{"jobtype":"S","args":[]}}', "ERR BATCH NEW: bid must"),
        (f'NEW {{"parent_bid":"{ghost}","complete":{{"jobtype":"C"}}}}', "ERR No such batch b-"),
        ('NEW {"success":{"jid":"x","jobtype":"S","args":[]}}', "ERR success callback: jobs must"),
        ('NEW {"success":{"jobtype":"S","priority":12}}', "ERR success callback: priority must"),
        ('NEW {"complete":{"jobtype":"C","at":"soon"}}', "ERR complete callback: invalid time"),
        ('NEW {"success":{"jobtype":"S","custom":{"group":5}}}', "ERR success callback: group"),
        (
            'NEW {"success":{"jobtype":"S","custom":{"expires_in":1e308}}}',
            "ERR success callback: custom.expires_in must be",
        ),
        (f"STATUS {ghost}", f"ERR No such batch {ghost}"),
        (f"OPEN {ghost}", f"ERR No such batch {ghost}"),
        (f"COMMIT {ghost}", f"ERR No such batch {ghost}"),
        ("STATUS ../../x", "ERR No such batch ../../x"),
        ("EXPLODE", "ERR BATCH needs NEW <json>"),
    ]
    for arg, text in errors:
        with pytest.raises(WireError) as caught:
            await w.call("BATCH", arg)
        assert str(caught.value).startswith(text), (arg, str(caught.value))
    with pytest.raises(WireError, match=f"^ERR No such batch {ghost}$"):
        await w.call("PUSH", member("lonely-01", ghost))
    pushed = [member("ok-000001", bid), member("nope-0001", ghost)]
    refused = json.loads(await w.call("PUSHB", pushed))
    assert refused == {"nope-0001": f"No such batch {ghost}"}
    assert (await status(w, bid))["total"] == 1
    check_store(store_url)


async def test_complete_then_success(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, **CALLBACKS)
    await w.call("PUSH", member("job-00001", bid))
    await w.call("PUSHB", [member("job-00002", bid)])
    await w.call("BATCH", f"COMMIT {bid}")
    await run(w)
    found = await status(w, bid)
    assert (found["total"], found["pending"], found["failed"]) == (2, 1, 0)
    assert (found["complete_st"], found["success_st"]) == ("", "")
    await run(w)
    assert await states(w, bid) == ("1", "")
    callback = await run(w, "cbs")
    assert callback["jid"] == "complete-cb" and callback["custom"] == {"_bid": bid}
    assert await states(w, bid) == ("2", "1")
    callback = await run(w, "cbs")
    assert callback["jid"] == "success-cb" and callback["custom"] == {"_bid": bid}
    assert callback["retry"] == 25  # PUSH's defaults
    assert await states(w, bid) == ("2", "2")
    assert await w.call("FETCH", "cbs") is None
    check_store(store_url)


async def test_a_failure_then_an_ack(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, **CALLBACKS)
    await w.call("PUSH", member("flaky-001", bid))
    await w.call("BATCH", f"COMMIT {bid}")
    await run(w, fail=True)
    found = await status(w, bid)
    assert (found["pending"], found["failed"], found["complete_st"]) == (1, 1, "1")
    await run(w, "cbs")  # the complete callback: ran once, failed or not
    assert await states(w, bid) == ("2", "")
    mutation = {"cmd": "requeue", "target": "retries", "filter": {"jids": ["flaky-001"]}}
    await w.call("MUTATE", mutation)
    await run(w, fail=True)  # a second failure counts once
    assert (await status(w, bid))["failed"] == 1
    await w.call("MUTATE", mutation)
    await run(w)
    found = await status(w, bid)
    assert (found["pending"], found["failed"], found["success_st"]) == (0, 0, "1")
    await run(w, "cbs")
    assert await states(w, bid) == ("2", "2")
    check_store(store_url)


async def test_a_dead_job_fires_complete_never_success(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, **CALLBACKS)
    await w.call("PUSH", member("doomed-01", bid, retry=0))
    await w.call("PUSH", member("fine-0001", bid))
    await w.call("BATCH", f"COMMIT {bid}")
    await run(w, fail=True)
    await run(w)
    await run(w, "cbs")
    await trio.sleep(0.2)  # loops pass: still nothing
    found = await status(w, bid)
    assert (found["pending"], found["failed"], found["complete_st"], found["success_st"]) == (
        1,
        1,
        "2",
        "",
    )
    assert await w.call("FETCH", "cbs") is None
    check_store(store_url)


async def test_an_empty_batch_fires_on_commit(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, success=CALLBACKS["success"])
    await trio.sleep(0.2)
    assert await states(w, bid) == ("", "")
    await w.call("BATCH", f"COMMIT {bid}")
    assert await states(w, bid) == ("", "1")  # at once, as Enterprise does
    await run(w, "cbs")
    assert await states(w, bid) == ("", "2")
    check_store(store_url)


async def test_no_callback_before_commit(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, success=CALLBACKS["success"])
    for n in range(3):
        await w.call("PUSH", member(f"early-{n:04d}", bid))
    for _ in range(3):
        await run(w)
    await trio.sleep(0.2)
    found = await status(w, bid)
    assert (found["pending"], found["success_st"]) == (0, "")
    assert await w.call("FETCH", "cbs") is None
    await w.call("BATCH", f"COMMIT {bid}")
    assert await states(w, bid) == ("", "1")
    check_store(store_url)


async def test_reopen_adds_jobs(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, success=CALLBACKS["success"])
    await w.call("PUSH", member("first-001", bid))
    await w.call("BATCH", f"COMMIT {bid}")
    assert await w.call("BATCH", f"OPEN {bid}") == bid.encode()  # reopened, never recommitted
    await w.call("PUSH", member("second-01", bid))
    found = await status(w, bid)
    assert (found["total"], found["pending"]) == (2, 2)
    await run(w)
    await run(w)
    assert await states(w, bid) == ("", "1")  # OPEN did not hold the callback back
    await w.call("BATCH", f"OPEN {bid}")  # after the callback: pending rises, no second one
    await w.call("PUSH", member("third-001", bid))
    await w.call("BATCH", f"COMMIT {bid}")
    found = await status(w, bid)
    assert (found["total"], found["pending"], found["success_st"]) == (3, 1, "1")
    await run(w)
    await run(w, "cbs")
    assert await w.call("FETCH", "cbs") is None
    assert await states(w, bid) == ("", "2")
    check_store(store_url)


async def test_parent_waits_for_child(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    parent = await new(w, description="parent", success=job("parent-cb", "P", queue="pcb"))
    child = await new(w, parent_bid=parent, success=job("child-cb1", "C", queue="ccb"))
    assert (await status(w, child))["parent_bid"] == parent
    await w.call("PUSH", member("p-job-001", parent))
    await w.call("PUSH", member("c-job-001", child, queue="kids"))
    await w.call("BATCH", f"COMMIT {child}")
    await w.call("BATCH", f"COMMIT {parent}")
    await run(w)
    assert (await status(w, parent))["total"] == 1  # a child's jobs are not the parent's
    await trio.sleep(0.2)
    assert await states(w, parent) == ("", "")  # the child has not succeeded
    await run(w, "kids")
    assert await states(w, child) == ("", "1")
    assert await states(w, parent) == ("", "")  # its callback has not finished
    callback = await run(w, "ccb")
    assert callback["custom"] == {"_bid": child, "_pbid": parent}
    assert await states(w, child) == ("", "2")
    assert await states(w, parent) == ("", "1")
    await run(w, "pcb")
    assert await states(w, parent) == ("", "2")
    check_store(store_url)


async def test_two_brokers_race_on_the_last_acks(
    start_broker: StartBroker, rdb: redis.Redis, store_url: str
) -> None:
    brokers = [await start_broker(), await start_broker()]
    wires = [await Wire.open(b.port, hello={"wid": f"w{i}"}) for i, b in enumerate(brokers)]
    for round_ in range(5):
        bid = await new(wires[0], **CALLBACKS)
        jobs = [member(f"race-{round_}-{n:03d}", bid) for n in range(20)]
        await wires[0].call("PUSHB", jobs)
        await wires[1].call("BATCH", f"COMMIT {bid}")
        fetched = [[], []]  # type: list[list[str]]
        for n in range(20):
            got = json.loads(await wires[n % 2].call("FETCH", "default"))
            fetched[n % 2].append(got["jid"])

        async def ack_all(i: int, jids: list[str]) -> None:
            for jid in jids:
                await wires[i].call("ACK", {"jid": jid})
                await wires[i].call("ACK", {"jid": jid})  # a duplicate: counted once

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ack_all, 0, fetched[0])
            nursery.start_soon(ack_all, 1, fetched[1])
        assert rdb.llen(QueueKeys("cbs").queue) == 1
        await run(wires[1], "cbs")
        await eventually(lambda: rdb.llen(QueueKeys("cbs").queue) == 1)
        await trio.sleep(0.1)
        assert rdb.llen(QueueKeys("cbs").queue) == 1
        await run(wires[0], "cbs")
        found = await status(wires[0], bid)
        assert (found["total"], found["pending"], found["complete_st"], found["success_st"]) == (
            20,
            0,
            "2",
            "2",
        )
    assert rdb.zcard(BATCHES_DUE) == 0
    check_store(store_url)


async def test_a_callback_another_broker_pushed_is_refused_quietly(
    start_broker: StartBroker,
    rdb: redis.Redis,
    store_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two brokers may read the same due callback before either pushes it; the second finds
    it pushed (not its jid in use, though the first push made that jid live): no warning, and
    the due entry goes."""
    brokers = [await start_broker(), await start_broker()]
    w = await Wire.open(brokers[0].port, hello={"wid": "w1"})
    bid = await new(w, success=CALLBACKS["success"])
    await w.call("PUSH", member("late-0001", bid))
    await w.call("BATCH", f"COMMIT {bid}")
    await run(w)  # its ACK pushes the success callback
    assert rdb.llen(QueueKeys("cbs").queue) == 1
    entry = f"success {bid}"
    rdb.zadd(BATCHES_DUE, {entry: 0})  # as the second broker read it, before that push
    with caplog.at_level(logging.WARNING, logger="hopper_broker.batches"):
        assert await brokers[1].manager.batches.fire(time.time()) == 0
    assert "refused" not in caplog.text
    await eventually(lambda: rdb.zscore(BATCHES_DUE, entry) is None)
    assert rdb.llen(QueueKeys("cbs").queue) == 1
    await run(w, "cbs")
    assert (await states(w, bid))[1] == "2"
    check_store(store_url)


async def test_duplicate_acks_count_once(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, success=CALLBACKS["success"])
    await w.call("PUSH", member("twice-001", bid))
    await w.call("PUSH", member("twice-002", bid))
    fetched = json.loads(await w.call("FETCH", "default"))
    await w.call("ACK", {"jid": fetched["jid"]})
    await w.call("ACK", {"jid": fetched["jid"]})
    with pytest.raises(WireError, match="Job not found"):  # no longer reserved
        await w.call("FAIL", {"jid": fetched["jid"], "message": "late"})
    found = await status(w, bid)
    assert (found["total"], found["pending"], found["failed"]) == (2, 1, 0)
    check_store(store_url)


async def _is(found: Any, expected: Any) -> bool:
    return bool(await found == expected)


async def test_uncommitted_batches_expire(start_broker: StartBroker, store_url: str) -> None:
    broker = await start_broker(batch_ttl=0.3)
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    parent = await new(w, complete=CALLBACKS["complete"])
    child = await new(w, parent_bid=parent, success=CALLBACKS["success"])
    await w.call("PUSH", member("orphan-01", child))
    await w.call("BATCH", f"COMMIT {parent}")

    async def gone() -> bool:
        try:
            await status(w, child)
        except WireError as exc:
            return str(exc) == f"ERR No such batch {child}"
        return False

    await eventually(gone)
    # the expired child no longer holds the parent back
    assert await eventually(lambda: _is(states(w, parent), ("1", "")))
    await run(w)  # the orphan still runs
    await run(w, "cbs")
    assert await states(w, parent) == ("2", "")
    check_store(store_url)


async def test_hopper_check_finds_and_mends_batches(
    broker: App, rdb: redis.Redis, store_url: str
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    bid = await new(w, success=CALLBACKS["success"])
    rdb.zrem(BATCHES_EXPIRY, bid)
    rdb.zadd(BATCHES_DUE, {"success b-ZZZZZZZZZZZZZZ": 1})
    command = [sys.executable, "-m", "hopper_broker", "check", "--redis-url", store_url]
    found = subprocess.run(command, capture_output=True, text=True, timeout=60, env=clean_env())
    assert found.returncode == 1
    assert "batch without expiry" in found.stdout and "batch due entry stale" in found.stdout
    mended = subprocess.run(
        [*command, "--repair"], capture_output=True, text=True, timeout=60, env=clean_env()
    )
    assert mended.returncode == 0, mended.stdout
    check_store(store_url)
    assert (await status(w, bid))["total"] == 0


async def test_a_callback_that_cannot_be_read_holds_back_no_other_batch(
    broker: App, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored callback that cannot be read (written by hand here: BATCH NEW checks them) is
    logged and dropped; the other batches' callbacks are pushed, the ACK that completes them
    answers."""
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    broken = await new(w, success=job("broken-cb", queue="cbs"))
    rdb.hset(batch(broken), "success", "not a job")
    assert await w.call("BATCH", f"COMMIT {broken}") == b"OK"  # empty: due at once
    bid = await new(w, success=job("working-cb", queue="cbs"))
    await w.call("PUSH", member("member-01", bid))
    await w.call("BATCH", f"COMMIT {bid}")
    await run(w)
    await eventually(lambda: rdb.llen(QueueKeys("cbs").queue) == 1)
    assert json.loads(await w.call("FETCH", "cbs"))["jid"] == "working-cb"
    assert any(
        f"batch {broken}: success callback cannot be read" in r.message for r in caplog.records
    )
    assert rdb.zcard(BATCHES_DUE) == 0
