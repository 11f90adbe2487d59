"""The loop waits on the CPU before it sleeps (loop_idle.py), and the spin ends as soon as a
broker socket has bytes, at the loop's next deadline, or not at all when a pass-end hook left
work; `busy_poll_us` is a setting like the others.

Each test gives the spin a budget far longer than its own deadline, so a spin that did not end
when it should would fail the test instead of slowing it.
"""

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import msgspec
import pytest
import trio

from hopper_broker.app import App
from hopper_broker.loop_idle import LoopIdle
from hopper_broker.sockets import RawStream
from hopper_broker.store.address import Address
from hopper_broker.store.connection import Pipeline
from tests.conftest import StartBroker
from tests.wire import Wire, job

FOREVER = 3600.0  # seconds of spin budget: only an event ends the spin
LOOPS = ("scheduler", "reaper", "dead_purge", "worker_reaper", "history")
DEADLINE = 10.0  # seconds a test has; a missed event spins until this deadline and fails it


@contextmanager
def spinning_forever() -> Iterator[LoopIdle]:
    """The loop's spin budget FOREVER, then back to what it was (a broker's, if one runs)."""
    idle = LoopIdle.current()
    budget, idle.budget = idle.budget, lambda: FOREVER
    try:
        yield idle
    finally:
        idle.budget = budget


@pytest.fixture
async def spin_forever() -> AsyncIterator[LoopIdle]:
    with spinning_forever() as idle:
        yield idle


async def test_a_redis_reply_ends_the_spin(spin_forever: LoopIdle, redis_url: str) -> None:
    async with trio.open_nursery() as nursery:
        pipeline = Pipeline(Address(redis_url))
        await nursery.start(pipeline.run)
        with trio.fail_after(DEADLINE):
            for n in range(20):
                assert await pipeline.execute("ECHO", f"n{n}") == f"n{n}".encode()
        nursery.cancel_scope.cancel()


@pytest.fixture
async def quiet_broker(start_broker: StartBroker) -> App:
    """A broker whose loops do not come round during a test (no deadline ends a spin)."""
    return await start_broker(**{f"{loop}_interval": FOREVER for loop in LOOPS})


async def test_client_bytes_end_the_spin(quiet_broker: App) -> None:
    # not the fixture: fixtures start at once, and the broker sets its budget as it starts
    with spinning_forever(), trio.fail_after(DEADLINE):
        await a_client_round(quiet_broker.port)


async def a_client_round(port: int) -> None:
    """Both ends are RawStreams: the client's bytes end the broker's spin, and the broker's
    reply ends the spin the client's read waits on."""
    wire = Wire(RawStream(socket.create_connection(("127.0.0.1", port))))
    assert (await wire.reply()).startswith(b"HI ")
    assert await wire.call("HELLO", {"v": 2, "wid": "spin"}) == b"OK"
    for n in range(10):
        assert await wire.call("PUSH", job(f"spin-{n:04}")) == b"OK"
        fetched = await wire.call("FETCH", "default")
        assert await wire.call("ACK", {"jid": msgspec.json.decode(fetched)["jid"]}) == b"OK"
    await wire.aclose()


async def test_the_spin_ends_at_the_loops_next_deadline(spin_forever: LoopIdle) -> None:
    with trio.fail_after(DEADLINE):
        for _ in range(5):
            await trio.sleep(0.01)


async def test_a_hook_that_left_work_is_not_kept_waiting(spin_forever: LoopIdle) -> None:
    """A hook that hands work to a task through the loop's wake-up channel (not a watched
    socket) says so, and the loop goes to that work instead of spinning."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    handed = False

    def hand_over() -> bool:
        nonlocal handed
        if handed:
            return False
        handed = True
        token.run_sync_soon(done.set)
        return True

    spin_forever.add_hook(hand_over)
    try:
        with trio.fail_after(DEADLINE):
            await done.wait()
    finally:
        spin_forever.remove_hook(hand_over)


async def test_the_app_spins_for_its_setting_and_a_reload_reaches_it(broker: App) -> None:
    idle = LoopIdle.current()
    assert idle.budget() == broker.settings().busy_poll_us / 1e6 == 200e-6
    broker.reload(msgspec.structs.replace(broker.settings(), busy_poll_us=0))
    assert idle.budget() == 0
