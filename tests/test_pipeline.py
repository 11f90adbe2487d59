"""The auto-pipelining Redis connection keeps every caller's commands in order and answers each
with its own replies, whether a command goes out alone at the end of a scheduler pass, with
others through the writer task, or in parts because the kernel would not take it at once.

On the test Redis's unix socket and over TCP (through tests/proxy.py), whose buffers differ.
"""

import pytest
import trio

from hopper_broker.store.address import Address
from hopper_broker.store.connection import Pipeline
from tests.proxy import BlackholeProxy

BIG = 8 * 1024 * 1024  # bytes: far more than a socket buffer takes at once
CALLERS = 40


@pytest.fixture(params=["unix", "tcp"])
async def pipeline(
    request: pytest.FixtureRequest, nursery: trio.Nursery, redis_url: str
) -> Pipeline:
    url = redis_url
    if request.param == "tcp":
        proxy = BlackholeProxy(redis_url.removeprefix("unix://"))
        await nursery.start(proxy.run)
        url = proxy.url
    pipeline = Pipeline(Address(url))
    await nursery.start(pipeline.run)
    return pipeline


async def test_a_lone_command_is_answered(pipeline: Pipeline) -> None:
    for n in range(20):  # each alone: nothing else in flight when it is sent
        assert await pipeline.execute("ECHO", f"lone-{n}") == f"lone-{n}".encode()


async def test_a_lone_write_taken_in_parts_is_finished(pipeline: Pipeline) -> None:
    key = "hopper-test:pipeline:lone-big"
    with trio.fail_after(5):  # not left waiting for a wake-up that never comes
        assert await pipeline.execute("SET", key, b"y" * BIG) == b"OK"
        assert await pipeline.execute("STRLEN", key) == BIG
    await pipeline.execute("DEL", key)


async def test_a_write_taken_in_parts_keeps_every_callers_order(pipeline: Pipeline) -> None:
    key = "hopper-test:pipeline:counter"
    await pipeline.execute("DEL", key, f"{key}:big")
    seen: dict[int, int] = {}

    async def count(n: int) -> None:
        seen[n] = await pipeline.execute("INCR", key)

    async with trio.open_nursery() as callers:
        for n in range(CALLERS):  # half queued before the big write, half while it is sent
            if n == CALLERS // 2:
                callers.start_soon(pipeline.execute, "SET", f"{key}:big", b"x" * BIG)
                await trio.lowlevel.checkpoint()
            callers.start_soon(count, n)
    assert sorted(seen.values()) == list(range(1, CALLERS + 1))
    assert await pipeline.execute("STRLEN", f"{key}:big") == BIG
    lone = await pipeline.execute("INCR", key)  # alone again after the big write
    assert lone == CALLERS + 1
    await pipeline.execute("DEL", key, f"{key}:big")
