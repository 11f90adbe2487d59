"""Faults under the client: lost replies, dropped connections, a broker killed and restarted.

A small TCP proxy between client and broker injects the network faults (real sockets).
"""

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.keys import QueueKeys
from hopper_client import AsyncClient, Client, ConnectionLost, Worker, make_job
from tests.conftest import BrokerProcess, eventually, live_jobs

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

DEFAULT = QueueKeys("default")


class Proxy:
    """Forwards TCP to the broker; can drop the reply to a command, or cut every connection."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.drop_reply_to: bytes | None = None  # prefix of the command whose reply is lost
        self.links: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._link, listeners)

    def sever(self) -> None:
        for scope in list(self.links):
            scope.cancel()

    async def _link(self, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", self.upstream)
        doomed = False

        async def up() -> None:
            nonlocal doomed
            async for data in client:
                if self.drop_reply_to and bytes(data).startswith(self.drop_reply_to):
                    self.drop_reply_to, doomed = None, True
                await server.send_all(data)

        async def down() -> None:
            async for data in server:
                if doomed:
                    return  # the broker did the work; the client never hears of it
                await client.send_all(data)

        scope = trio.CancelScope()
        self.links.add(scope)
        try:
            with scope:
                async with trio.open_nursery() as pumps:
                    for pump in (up, down):
                        pumps.start_soon(_then_cancel, pump, pumps.cancel_scope)
        finally:
            self.links.discard(scope)
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(server)


async def _then_cancel(pump: Callable[[], Any], scope: trio.CancelScope) -> None:
    with contextlib.suppress(trio.BrokenResourceError):
        await pump()
    scope.cancel()


@pytest.fixture
async def proxy(broker: App, nursery: trio.Nursery) -> Proxy:
    proxy = Proxy(broker.port)
    await nursery.start(proxy.run)
    return proxy


def via(proxy: Proxy) -> str:
    return f"tcp://127.0.0.1:{proxy.port}"


async def test_commands_resent_after_a_lost_reply_take_effect_once(
    proxy: Proxy, rdb: redis.Redis
) -> None:
    def work() -> None:
        with Client(via(proxy)) as client:
            proxy.drop_reply_to = b"PUSH "
            jid = client.push("work", [1])  # resent: "jid in use" means it was pushed
            proxy.drop_reply_to = b"PUSHB "
            assert client.push_bulk([make_job("work", [2]), make_job("work", [3])]) == {}
            first = client.fetch()
            assert first is not None and first.jid == jid
            proxy.drop_reply_to = b"FAIL "
            client.fail(jid, "Boom", "failed once")  # resent: "Job not found" means it failed
            proxy.drop_reply_to = b"ACK "
            second = client.fetch()
            assert second is not None
            client.ack(second.jid)
            assert proxy.drop_reply_to is None  # every fault was injected

    await trio.to_thread.run_sync(work)
    assert live_jobs(rdb) == 2  # the failed one and the third, nothing twice
    assert rdb.zcard(DEFAULT.retries) == 1
    assert rdb.llen(DEFAULT.queue) == 1


async def test_pipelined_pushes_resent_after_a_lost_reply_land_once(
    proxy: Proxy, rdb: redis.Redis
) -> None:
    def work() -> dict[str, str]:
        with Client(via(proxy)) as client:
            proxy.drop_reply_to = b"PUSH "  # the connection dies with replies unread
            with client.pipeline() as pipe:
                for n in range(300):
                    pipe.push("work", [n])
            assert proxy.drop_reply_to is None
            return pipe.refused

    assert await trio.to_thread.run_sync(work) == {}
    assert rdb.llen(DEFAULT.queue) == 300


async def test_async_client_reconnects_after_the_network_drops(proxy: Proxy) -> None:
    async with AsyncClient(via(proxy)) as client:
        await client.push("work")
        proxy.sever()
        await client.push("work")
        assert (await client.info())["faktory"]["queues"]["default"] == 2


async def test_worker_acks_over_a_new_connection_after_a_drop(
    proxy: Proxy, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    release, started, runs = trio.Event(), trio.Event(), []
    worker = Worker(via(proxy), concurrency=2, heartbeat=0.05)

    @worker.job()
    async def hold() -> None:
        runs.append(1)
        started.set()
        await release.wait()

    await nursery.start(worker.arun)
    async with AsyncClient(via(proxy)) as producer:
        jid = await producer.push("hold")
    await started.wait()
    proxy.sever()
    release.set()
    await eventually(lambda: rdb.zscore(DEFAULT.finished, jid) is not None)
    assert runs == [1] and rdb.zcard(DEFAULT.retries) == 0
    worker.terminate()


@pytest.mark.slow
async def test_worker_survives_a_broker_restart_without_losing_jobs(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    hopper = await trio.to_thread.run_sync(broker_process)
    release, started, seen = trio.Event(), trio.Event(), []
    worker = Worker(hopper.url, concurrency=4, heartbeat=0.05)

    @worker.job()
    async def hold() -> None:
        started.set()
        await release.wait()

    worker.register("count", seen.append)
    await nursery.start(worker.arun)
    async with AsyncClient(hopper.url) as producer:
        held = await producer.push("hold")
        before = [await producer.push("count", [n]) for n in range(50)]
        await started.wait()
        await eventually(lambda: len(seen) == 50)
        hopper.kill()
        with pytest.raises(ConnectionLost):
            await AsyncClient(hopper.url, retry_for=0.1).info()
        await trio.to_thread.run_sync(hopper.start)
        release.set()  # its ACK must reach the restarted broker
        after = [await producer.push("count", [n]) for n in range(50, 100)]
    await eventually(lambda: len(seen) >= 100 and live_jobs(rdb) == 0)
    assert sorted(seen) == list(range(100))  # each ran exactly once
    assert len(before + after) == 100 and held
    assert rdb.zcard(DEFAULT.retries) == 0
    worker.terminate()
