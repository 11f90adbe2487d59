"""A Redis connection that goes silent without closing (half-open) is found within
`redis_timeout`, its callers get a clear error, and the broker carries on over a new one.

Brokers reach the test Redis through a real TCP proxy that can drop every byte of the open
connections and hold new ones (tests/proxy.py).
"""

import json
import socket
import time

import pytest
import redis
import trio

from hopper_broker.errors import RedisUnavailable
from hopper_broker.store.address import KEEPALIVE_IDLE, Address
from hopper_broker.store.connection import Pipeline
from hopper_broker.store.keys import PUSHED_CHANNEL
from tests.conftest import StartBroker, eventually
from tests.proxy import BlackholeProxy
from tests.wire import Wire, WireError, job

TIMEOUT = 1.0  # redis_timeout in these tests
MARGIN = 2.0  # generous: a shared machine may be slow


@pytest.fixture
async def proxy(nursery: trio.Nursery, redis_url: str) -> BlackholeProxy:
    proxy = BlackholeProxy(redis_url.removeprefix("unix://"))
    await nursery.start(proxy.run)
    return proxy


async def test_a_silent_redis_is_given_up_within_the_timeout_and_no_job_is_lost(
    nursery: trio.Nursery, proxy: BlackholeProxy
) -> None:
    app = await StartBroker(nursery, proxy.url)(redis_timeout=TIMEOUT, fetch_timeout=0.1)
    wire = await Wire.open(app.port, hello={"wid": "link-worker"})
    jids = {f"before-{n:04d}" for n in range(50)}
    for jid in sorted(jids):
        assert await wire.call("PUSH", job(jid, queue="link")) == b"OK"

    proxy.blackhole()
    began = trio.current_time()
    with pytest.raises(WireError) as error:
        await wire.call("PUSH", job("during-0001", queue="link"))
    detected = trio.current_time() - began
    assert str(error.value) == f"ERR redis unavailable: no reply from {proxy.url} within 1s"
    assert TIMEOUT / 2 < detected < TIMEOUT + MARGIN, detected

    proxy.resume()  # the broker's new connection (held meanwhile) is forwarded from now on

    async def served() -> bool:
        try:
            return bool(await wire.call("INFO"))
        except WireError as exc:  # until the broker has reconnected: at once, never a hang
            assert str(exc).startswith("ERR redis unavailable: not connected"), exc
            return False

    await eventually(served)
    assert await wire.call("PUSH", job("after-0001", queue="link")) == b"OK"
    fetched: list[str] = []
    while payload := await wire.call("FETCH", "link"):
        fetched.append(json.loads(payload)["jid"])
        assert await wire.call("ACK", {"jid": fetched[-1]}) == b"OK"
    # The PUSH in flight at the blackout never reached Redis (the proxy dropped it): every job
    # pushed before it and after it ran, once.
    assert sorted(fetched) == sorted(jids | {"after-0001"})
    await wire.aclose()


async def test_an_idle_connection_is_probed_and_replaced_before_a_command_needs_it(
    nursery: trio.Nursery, proxy: BlackholeProxy
) -> None:
    timeout = 0.5
    pipeline = Pipeline(Address(proxy.url), lambda: timeout)
    await nursery.start(pipeline.run)
    assert await pipeline.execute("PING") == b"PONG"
    proxy.blackhole()
    proxy.resume()  # the open connection stays cut; new ones are forwarded
    began = trio.current_time()
    # No command is sent: the pipeline's own PING finds the silence, and it reconnects.
    await eventually(lambda: proxy.connections == 2, timeout=2 * timeout + MARGIN)

    async def answers() -> bool:  # the new connection accepted by the proxy, then opened
        try:
            return bool(await pipeline.execute("PING") == b"PONG")
        except RedisUnavailable:
            return False

    await eventually(answers, timeout=2 * timeout + MARGIN)
    assert trio.current_time() - began < 2 * timeout + MARGIN


async def test_opening_is_bounded_and_tcp_connections_keep_alive(proxy: BlackholeProxy) -> None:
    stream = await Address(proxy.url).open()
    assert stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE_IDLE
    await stream.aclose()
    proxy.blackhole()  # new connections are held: the AUTH is never answered
    with pytest.raises(OSError) as error:
        await Address(f"redis://:secret@127.0.0.1:{proxy.port}").open(0.2)
    assert str(error.value) == f"no reply from redis://:***@127.0.0.1:{proxy.port} within 0.2s"


async def test_the_push_relay_resubscribes_after_a_silent_redis(
    start_broker: StartBroker,
    proxy: BlackholeProxy,
    rdb: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    nursery: trio.Nursery,
) -> None:
    a = await start_broker()
    b = await StartBroker(nursery, proxy.url)(redis_timeout=TIMEOUT, fetch_timeout=30.0)

    def subscribers() -> int:
        count: int = rdb.pubsub_numsub(PUSHED_CHANNEL)[0][1]
        return count

    await eventually(lambda: subscribers() == 2)
    proxy.blackhole()
    await eventually(lambda: "push notifications lost" in caplog.text, timeout=2 * TIMEOUT + MARGIN)
    proxy.resume()
    # A, B's new subscription, and B's old connection, which the proxy keeps open to Redis.
    await eventually(lambda: subscribers() == 3)

    pusher = await Wire.open(a.port, hello={"wid": "pusher"})
    fetcher = await Wire.open(b.port, hello={"wid": "fetcher"})
    fetched: list[bytes] = []

    async def fetch() -> None:
        fetched.append(await fetcher.call("FETCH", "relayed"))

    nursery.start_soon(fetch)
    assert b.manager is not None
    doorbell = b.manager.doorbell
    await eventually(lambda: doorbell._lines.get("relayed"))  # B's FETCH waits for a ring
    assert await pusher.call("PUSH", job("relayed-0001", queue="relayed")) == b"OK"
    with trio.fail_after(MARGIN):  # well before fetch_timeout (30 s)
        await eventually(lambda: fetched)
    assert json.loads(fetched[0])["jid"] == "relayed-0001"
    await pusher.aclose()
    await fetcher.aclose()


async def test_a_busy_process_is_not_taken_for_a_silent_redis(
    nursery: trio.Nursery, redis_url: str
) -> None:
    """Redis answers while this process is too busy to read (here: the event loop blocked);
    the reply waiting in the socket is not silence, so the connection is kept."""
    pipeline = Pipeline(Address(redis_url), lambda: 0.3)
    await nursery.start(pipeline.run)
    replies: list[object] = []

    async def blpop() -> None:
        replies.append(await pipeline.execute("BLPOP", "hopper-test-nothing", "0.1"))

    for _ in range(5):  # the watchdog and the reader wake together, in either order
        async with trio.open_nursery() as calls:
            calls.start_soon(blpop)
            await trio.sleep(0.02)  # written; Redis answers at 0.1 s, nobody reads until 0.6
            time.sleep(0.6)  # the busy process
    assert replies == [None] * 5
    assert await pipeline.execute("PING") == b"PONG"
    assert pipeline.connections == 1
