"""AsyncClient on trio and on asyncio (in a thread) against a real broker."""

import asyncio
from typing import Any

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.keys import QueueKeys
from hopper_client import AsyncClient, ServerError, make_job
from tests.conftest import live_jobs

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

NESTED = {"ü": ["✓", {"deep": [1, 2.5, None, True]}], "big": "y" * 200_000}


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def exercise(client: AsyncClient) -> dict[str, Any]:
    """The whole surface once; runs unchanged on trio and on asyncio."""
    jid = await client.push("work", [NESTED], queue="aio", custom={"k": "v"})
    assert await client.push_bulk([make_job("work", [n], queue="aio") for n in range(3)]) == {}
    job = await client.fetch("aio")
    assert job is not None and (job.jid, job.args, job.custom) == (jid, [NESTED], {"k": "v"})
    await client.ack(jid)
    job = await client.fetch("aio")
    assert job is not None
    await client.fail(job.jid, "Oops", "it broke", ["line 1"])
    await client.pause("aio")
    await client.resume("aio")
    latency = await client.latency("aio")
    await client.mutate("discard", "retries", jids=[job.jid])
    with pytest.raises(ServerError, match="Job not found"):
        await client.fail("missing-jid", "Oops")
    info = await client.info()
    await client.flush()
    return {"latency": latency, "info": info}


async def test_trio_surface(broker: App, rdb: redis.Redis) -> None:
    async with AsyncClient(url(broker)) as client:
        result = await exercise(client)
    assert result["latency"]["aio"] >= 0
    assert result["info"]["faktory"]["queues"]["aio"] == 2
    assert live_jobs(rdb, "aio") == 0


async def test_asyncio_surface_and_concurrent_tasks(broker: App) -> None:
    async def main() -> tuple[dict[str, Any], int]:
        async with AsyncClient(url(broker)) as client:
            result = await exercise(client)
            jids = await asyncio.gather(*(client.push("many", [n]) for n in range(50)))
            return result, len(set(jids))

    result, pushed = await trio.to_thread.run_sync(asyncio.run, main())
    assert result["info"]["faktory"]["queues"]["aio"] == 2 and pushed == 50


async def test_trio_concurrent_tasks_share_one_client(broker: App) -> None:
    jids: list[str] = []
    async with AsyncClient(url(broker)) as client:

        async def push(n: int) -> None:
            jids.append(await client.push("many", [n]))

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(push, n)
        assert (await client.info())["faktory"]["queues"]["default"] == 50
    assert len(set(jids)) == 50


async def test_pipeline_on_trio_and_asyncio(broker: App, rdb: redis.Redis) -> None:
    async def pipeline() -> dict[str, str]:
        async with AsyncClient(url(broker)) as client:
            async with client.pipeline() as pipe:
                for n in range(150):
                    await pipe.push("piped", [n], queue="piped")
                await pipe.push_bulk(make_job("piped", [n], queue="piped") for n in range(50))
                await pipe.push("piped", queue="bad queue!", jid="bad-queue-1")
            return pipe.refused

    refused = await pipeline()
    assert list(refused) == ["bad-queue-1"] and rdb.llen(QueueKeys("piped").queue) == 200
    assert await trio.to_thread.run_sync(asyncio.run, pipeline()) == refused
    assert rdb.llen(QueueKeys("piped").queue) == 400


async def test_cancelled_fetch_leaves_the_client_usable(broker: App) -> None:
    async with AsyncClient(url(broker), max_idle=1) as client:
        with trio.move_on_after(0.05):
            await client.fetch("empty")  # blocks in the broker; cancelled mid-command
        await client.push("work")  # a fresh connection, not the one with a reply pending
        job = await client.fetch()
        assert job is not None and job.jobtype == "work"


async def test_asyncio_cancellation_too(broker: App) -> None:
    async def main() -> bool:
        async with AsyncClient(url(broker), max_idle=1) as client:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await client.fetch("empty")
            jid = await client.push("work")
            job = await client.fetch()
            return job is not None and job.jid == jid

    assert await trio.to_thread.run_sync(asyncio.run, main())
