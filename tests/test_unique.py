"""Unique jobs over the wire, as Faktory Enterprise defines them (custom.unique_for,
unique_until success | start; -NOTUNIQUE Job not unique) and Hopper's further modes (ttl,
replace) and explicit unique_key; several pushers on two brokers take one lock."""

import json
from typing import Any

import pytest
import trio

from hopper_broker.app import App
from tests.conftest import StartBroker, check_store, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

NOT_UNIQUE = "NOTUNIQUE Job not unique"


def unique(jid: str, *args: Any, **custom: Any) -> dict[str, Any]:
    return job(jid, "report", args=list(args), custom={"unique_for": 60, **custom})


async def refused(w: Wire, pushed: dict[str, Any]) -> str:
    with pytest.raises(WireError) as caught:
        await w.call("PUSH", pushed)
    return str(caught.value)


async def state(w: Wire, jid: str) -> str:
    found: str = json.loads(await w.call("JOB", f"STATE {jid}"))["state"]
    return found


async def test_unique_until_success_as_faktory_enterprise(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    assert await w.call("PUSH", unique("first-001", 1)) == b"OK"
    assert await refused(w, unique("second-01", 1)) == NOT_UNIQUE
    assert await w.call("PUSH", unique("other-arg", 2)) == b"OK"  # other args
    assert await w.call("PUSH", unique("an-object", {"user": 7, "plan": "pro"})) == b"OK"
    same = unique("same-value", {"plan": "pro", "user": 7})  # the same JSON value
    assert await refused(w, same) == NOT_UNIQUE
    assert await w.call("PUSH", {**unique("other-que", 1), "queue": "q2"}) == b"OK"
    assert await w.call("PUSH", job("bypass-01", "report", args=[1])) == b"OK"  # no unique_for
    reply = json.loads(await w.call("PUSHB", [unique("bulk-0001", 1), unique("bulk-0002", 3)]))
    assert reply == {"bulk-0001": NOT_UNIQUE}

    fetched = json.loads(await w.call("FETCH", "default"))
    assert fetched["jid"] == "first-001"
    await w.call("FAIL", {"jid": "first-001", "message": "again"})  # retrying: still held
    assert await refused(w, unique("third-001", 1)) == NOT_UNIQUE
    await w.call(
        "MUTATE", {"cmd": "requeue", "target": "retries", "filter": {"jids": ["first-001"]}}
    )
    while (fetched := json.loads(await w.call("FETCH", "default")))["jid"] != "first-001":
        await w.call("ACK", {"jid": fetched["jid"]})
    await w.call("ACK", {"jid": "first-001"})  # success: released
    assert await w.call("PUSH", unique("fourth-01", 1)) == b"OK"
    check_store(store_url)


async def test_unique_until_start_releases_at_fetch(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", unique("start-001", unique_until="start"))
    assert await refused(w, unique("start-002", unique_until="start")) == NOT_UNIQUE
    await w.call("FETCH", "default")
    assert await w.call("PUSH", unique("start-003", unique_until="start")) == b"OK"


async def test_ttl_mode_holds_for_unique_for_whatever_happens(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", unique("ttl-00001", unique_until="ttl", unique_for=0.5))
    await w.call("FETCH", "default")
    await w.call("ACK", {"jid": "ttl-00001"})
    assert await refused(w, unique("ttl-00002", unique_until="ttl")) == NOT_UNIQUE

    async def free() -> bool:
        try:
            await w.call("PUSH", unique("ttl-00003", unique_until="ttl"))
        except WireError:
            return False
        return True

    await eventually(free)


async def test_replace_mode_debounces_a_waiting_job(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    later = "2099-01-01T00:00:00Z"
    await w.call("PUSH", {**unique("bounce-01", unique_until="replace"), "at": later})
    await w.call("PUSH", {**unique("bounce-02", unique_until="replace"), "at": later})
    assert await state(w, "bounce-01") == "replaced"
    assert await state(w, "bounce-02") == "scheduled"
    await w.call("PUSH", unique("bounce-03", unique_until="replace"))
    assert await state(w, "bounce-02") == "replaced"
    await w.call("FETCH", "default")  # started: a new push is a new pending run
    await w.call("PUSH", unique("bounce-04", unique_until="replace"))
    assert await state(w, "bounce-03") == "working" and await state(w, "bounce-04") == "queued"
    check_store(store_url)


async def test_an_explicit_unique_key(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", unique("keyed-001", 1, unique_key="user:42"))
    assert await refused(w, unique("keyed-002", 2, unique_key="user:42")) == NOT_UNIQUE
    assert await w.call("PUSH", unique("keyed-003", 1, unique_key="user:43")) == b"OK"


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ({"unique_for": "600"}, "custom.unique_for must be a number of seconds above 0"),
        ({"unique_for": 0}, "custom.unique_for must be a number"),
        ({"unique_for": 5, "unique_until": "later"}, "custom.unique_until must be one of"),
        ({"unique_for": 5, "unique_key": ""}, "custom.unique_key must be a string"),
    ],
)
async def test_bad_unique_settings_are_refused(
    broker: App, custom: dict[str, Any], error: str
) -> None:
    w = await Wire.open(broker.port, hello={})
    assert error in await refused(w, job("badly-001", custom=custom))


async def test_one_lock_for_concurrent_pushers_on_two_brokers(
    start_broker: StartBroker, store_url: str
) -> None:
    brokers = [await start_broker(), await start_broker()]
    stored: list[str] = []

    async def pusher(n: int) -> None:
        w = await Wire.open(brokers[n % 2].port, hello={})
        for round_ in range(20):
            try:
                await w.call("PUSH", unique(f"race-{n:02d}-{round_:02d}", round_))
                stored.append(f"{round_}")
            except WireError as exc:
                assert str(exc) == NOT_UNIQUE

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(pusher, n)
    assert sorted(stored) == sorted(f"{r}" for r in range(20))  # one job per identity
    check_store(store_url)
