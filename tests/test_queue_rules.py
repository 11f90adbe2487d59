"""Queue rules over the wire: timed pauses (kept in Redis, so every broker and a restart see
them), bounded queues with back-pressure (-FULL), and drain modes (-DRAINING) per queue and
for the whole broker."""

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import trio
import trio.testing

from hopper_broker.__main__ import load_config, parser
from hopper_broker.app import App
from hopper_broker.store.keys import QueueKeys
from hopper_client import AsyncClient, Draining, NotUnique, QueueFull
from tests.conftest import BrokerProcess, StartBroker, check_store, eventually
from tests.wire import SyncWire, Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def info(w: Wire) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("INFO"))
    return found


async def test_a_timed_pause_ends_by_itself_on_every_broker(start_broker: StartBroker) -> None:
    first, second = await start_broker(), await start_broker(fetch_timeout=0.1)
    w = await Wire.open(first.port, hello={})
    await w.call("PUSH", job("paused-01", queue="q"))
    assert await w.call("QUEUE", "PAUSE q for=0.5") == b"OK"
    other = await Wire.open(second.port, hello={"wid": "w2"})
    assert await other.call("FETCH", "q") is None
    assert (await info(w))["hopper"]["queues"]["q"]["paused"] == "1"

    async def fetched() -> bool:
        return await other.call("FETCH", "q") is not None

    await eventually(fetched)
    assert "q" not in (await info(w))["hopper"]["queues"]
    await w.call("QUEUE", "PAUSE q")  # without for=: until RESUME
    assert await other.call("FETCH", "q") is None
    await w.call("QUEUE", "RESUME q")


async def test_a_bounded_queue_refuses_pushes_beyond_its_size(broker: App, store_url: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    assert await w.call("QUEUE", "SET small max_size=3") == b"OK"
    for i in range(3):
        await w.call("PUSH", job(f"small-{i:03d}", queue="small"))
    with pytest.raises(WireError, match="FULL queue small is full"):
        await w.call("PUSH", job("small-999", queue="small"))
    later = job("small-lat", queue="small", at="2099-01-01T00:00:00Z")
    assert await w.call("PUSH", later) == b"OK"  # scheduled jobs are not held back
    batch = [job("small-b01", queue="small"), job("small-b02", queue="other")]
    assert json.loads(await w.call("PUSHB", batch)) == {"small-b01": "FULL queue small is full"}
    await w.call("FETCH", "small")
    assert await w.call("PUSH", job("small-004", queue="small")) == b"OK"
    assert (await info(w))["hopper"]["queues"]["small"] == {"max_size": "3"}
    await w.call("QUEUE", "SET small max_size=0")
    assert "small" not in (await info(w))["hopper"]["queues"]
    check_store(store_url)


async def test_a_bounded_queue_never_exceeds_its_size_under_concurrent_pushers(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    brokers = [await start_broker(), await start_broker()]
    w = await Wire.open(brokers[0].port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET bounded max_size=50")
    key = QueueKeys("bounded").queue
    seen: list[int] = []
    refused = 0

    async def pusher(n: int) -> None:
        nonlocal refused
        conn = await Wire.open(brokers[n % 2].port, hello={})
        for i in range(40):
            try:
                await conn.call("PUSH", job(f"bound-{n:02d}-{i:03d}", queue="bounded"))
            except WireError as exc:
                assert str(exc) == "FULL queue bounded is full"
                refused += 1

    async def consumer() -> None:
        for _ in range(100):
            if await w.call("FETCH", "bounded") is None:
                break

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(pusher, n)
        nursery.start_soon(consumer)
        for _ in range(200):  # sampled while they push
            seen.append(rdb.llen(key))
            await trio.sleep(0)
    seen.append(rdb.llen(key))
    assert max(seen) <= 50 and refused > 0


async def test_drain_refuses_pushes_and_serves_the_rest(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("drain-001", queue="dq"))
    await w.call("QUEUE", "SET dq draining=on")
    with pytest.raises(WireError, match="DRAINING queue dq is draining"):
        await w.call("PUSH", job("drain-002", queue="dq"))
    fetched = json.loads(await w.call("FETCH", "dq"))
    assert await w.call("ACK", {"jid": fetched["jid"]}) == b"OK"
    await w.call("QUEUE", "SET dq draining=off")
    assert await w.call("PUSH", job("drain-003", queue="dq")) == b"OK"

    assert await w.call("DRAIN", "ON") == b"OK"
    assert (await info(w))["hopper"]["draining"] is True
    reply = json.loads(await w.call("PUSHB", [job("drain-004"), job("drain-005", queue="x")]))
    assert set(reply) == {"drain-004", "drain-005"}
    assert await w.call("DRAIN", "OFF") == b"OK"
    assert await w.call("PUSH", job("drain-006")) == b"OK"


@pytest.mark.parametrize(
    ("verb", "arg", "error"),
    [
        ("QUEUE", "SET q max_size=lots", "QUEUE SET: not a setting: max_size=lots"),
        ("QUEUE", "SET q color=red", "QUEUE SET: not a setting: color=red"),
        ("QUEUE", "PAUSE q for=soon", "QUEUE PAUSE: not a number of seconds: soon"),
        ("QUEUE", "PAUSE q until=5", "QUEUE PAUSE takes one option: for=<seconds>"),
        ("QUEUE", "REMOVE q for=5", "QUEUE REMOVE takes no options"),
        ("DRAIN", "MAYBE", "DRAIN needs ON or OFF"),
    ],
)
async def test_bad_rules_are_refused(broker: App, verb: str, arg: str, error: str) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match=error):
        await w.call(verb, arg)


async def test_the_client_raises_queue_full_or_waits_for_room(broker: App) -> None:
    async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as client:
        w = await Wire.open(broker.port, hello={"wid": "w1"})
        await w.call("QUEUE", "SET tiny max_size=1")
        await client.push("work", queue="tiny")
        with pytest.raises(QueueFull):
            await client.push("work", queue="tiny")

        async def make_room() -> None:
            await trio.testing.wait_all_tasks_blocked(0.01)  # the push waits between tries
            await w.call("FETCH", "tiny")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(make_room)
            assert await client.push("work", queue="tiny", wait=5)
        await w.call("QUEUE", "SET tiny draining=on")
        with pytest.raises(Draining):
            await client.push("work", queue="tiny")
        await client.push("report", [1], custom={"unique_for": 60})
        with pytest.raises(NotUnique):
            await client.push("report", [1], custom={"unique_for": 60})


async def test_two_brokers_never_reserve_more_than_the_concurrency_limit(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    brokers = [await start_broker(), await start_broker()]
    admin = await Wire.open(brokers[0].port, hello={})
    await admin.call("QUEUE", "SET capped concurrency=3")
    await admin.call("PUSHB", [job(f"capped-{i:03d}", queue="capped") for i in range(60)])
    working = QueueKeys("capped").working
    seen: list[int] = []
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        w = await Wire.open(brokers[n % 2].port, hello={"wid": f"w{n}"})
        while done < 60:
            reply = await w.call("FETCH", "capped")
            if reply is not None:
                seen.append(rdb.zcard(working))
                await trio.sleep(0.005)  # the job runs a little
                await w.call("ACK", {"jid": json.loads(reply)["jid"]})
                done += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(worker, n)
    assert done == 60 and max(seen) <= 3 and max(seen) == 3


@pytest.mark.timing
# One Redis only: with burst 1 each token a FETCH takes late is time lost, and split mode adds
# a round trip before each FETCH's script by design (docs/cluster.md), about 10 % of 50/s here.
@pytest.mark.parametrize("store_mode", ["one"], indirect=True)
@pytest.mark.timing  # counts jobs per wall-clock second: alone, after the rest (make test)
async def test_a_rate_limit_spreads_jobs_over_time(start_broker: StartBroker) -> None:
    brokers = [await start_broker(), await start_broker()]
    admin = await Wire.open(brokers[0].port, hello={})
    await admin.call("QUEUE", "SET paced rate=50")
    await admin.call("PUSHB", [job(f"paced-{i:04d}", queue="paced") for i in range(2000)])
    counts: list[int] = []
    start = trio.current_time()

    async def worker(n: int) -> None:
        w = await Wire.open(brokers[n % 2].port, hello={"wid": f"w{n}"})
        while trio.current_time() - start < 10:
            reply = await w.call("FETCH", "paced")
            if reply is not None:
                second = int(trio.current_time() - start)
                if second < 10:
                    counts.append(second)
                await w.call("ACK", {"jid": json.loads(reply)["jid"]})

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(worker, n)
    per_second = [counts.count(s) for s in range(10)]
    assert 450 <= len(counts) <= 550, per_second
    assert all(45 <= n <= 55 for n in per_second), per_second


def test_queue_settings_from_the_file_apply_at_start_and_at_reload(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    settings = tmp_path / "hopper.toml"
    settings.write_text("[queues.images]\nmax_size = 5\nconcurrency = 2\n")
    broker = broker_process("--config", str(settings))
    w = SyncWire(broker.port, hello={})
    assert json.loads(w.call("INFO"))["hopper"]["queues"]["images"] == {
        "max_size": "5",
        "concurrency": "2",
    }
    settings.write_text("[queues.images]\nrate = 2.5\ndraining = true\n")
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    wanted = {"rate": "2.5", "draining": "1"}  # what the file no longer gives is cleared
    deadline = time.monotonic() + 10
    while json.loads(w.call("INFO"))["hopper"]["queues"]["images"] != wanted:
        assert time.monotonic() < deadline, "the reload did not apply"
        time.sleep(0.05)
    w.close()


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ("[queues.images]\nrate = -1.0\n", "queues.images.rate: not a valid value: -1.0"),
        ("[queues.images]\ncolour = 3\n", "unknown field `colour`"),
        ('[queues."bad name"]\nmax_size = 1\n', "queues.bad name: not a queue name"),
    ],
)
def test_bad_queue_settings_are_refused_naming_them(tmp_path: Path, toml: str, error: str) -> None:
    settings = tmp_path / "hopper.toml"
    settings.write_text(toml)
    with pytest.raises((ValueError, msgspec.ValidationError), match=error):
        load_config(parser().parse_args(["run", "--config", str(settings)]), {})


async def test_a_replace_push_takes_the_place_of_its_waiting_job_in_a_full_queue(
    broker: App,
) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("QUEUE", "SET full max_size=1")
    custom = {"unique_for": 60, "unique_until": "replace"}
    await w.call("PUSH", job("first-001", queue="full", custom=custom))
    assert await w.call("PUSH", job("second-01", queue="full", custom=custom)) == b"OK"
    with pytest.raises(WireError, match="FULL"):
        await w.call("PUSH", job("third-001", queue="full"))


async def test_an_expired_reservation_frees_its_concurrency_slot(start_broker: StartBroker) -> None:
    app = await start_broker(min_reservation=1, reaper_interval=3600)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    await w.call("QUEUE", "SET slow concurrency=1")
    await w.call("PUSH", job("slow-0001", queue="slow", reserve_for=1))
    await w.call("PUSH", job("slow-0002", queue="slow"))
    await w.call("FETCH", "slow")

    async def second() -> bool:
        return await w.call("FETCH", "slow") is not None

    await eventually(second)  # after 1 s, though the reaper has not run


async def test_settings_need_ascii_numbers_and_queue_names(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match="not a setting: max_size=٣"):
        await w.call("QUEUE", "SET q max_size=٣")
    with pytest.raises(WireError, match="queue names must match"):
        await w.call("QUEUE", "SET a}b max_size=3")


def test_file_settings_outlive_flush_and_a_reload_clears_what_the_file_drops(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    settings = tmp_path / "hopper.toml"
    settings.write_text("[queues.kept]\nmax_size = 7\nconcurrency = 2\n")
    broker = broker_process("--config", str(settings))
    w = SyncWire(broker.port, hello={})
    w.call("FLUSH")
    assert json.loads(w.call("INFO"))["hopper"]["queues"]["kept"] == {
        "max_size": "7",
        "concurrency": "2",
    }
    settings.write_text("[queues.kept]\nmax_size = 7\n")
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while json.loads(w.call("INFO"))["hopper"]["queues"]["kept"] != {"max_size": "7"}:
        assert time.monotonic() < deadline, "the reload did not clear concurrency"
        time.sleep(0.05)
    w.close()


async def test_the_client_sets_queue_rules_and_drains(broker: App) -> None:
    async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as client:
        await client.push("work", queue="limited")  # INFO shows the settings of listed queues
        await client.set_queue("limited", max_size=2, concurrency=1, rate=2.5)
        info = await client.info()
        assert info["hopper"]["queues"]["limited"] == {
            "max_size": "2",
            "concurrency": "1",
            "rate": "2.5",
        }
        await client.set_queue("limited", concurrency=0, draining=True)
        assert (await client.info())["hopper"]["queues"]["limited"] == {
            "max_size": "2",
            "rate": "2.5",
            "draining": "1",
        }
        with pytest.raises(Draining):
            await client.push("work", queue="limited")
        await client.drain()
        with pytest.raises(Draining):
            await client.push("work")
        await client.drain(False)
        assert await client.push("work")
