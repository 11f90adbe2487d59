"""Limits under abuse: oversized lines, huge and deeply nested JSON, slowloris, clients that read
nothing, thousands of connections and connection floods. Each limit answers clearly and the
broker keeps serving everyone else."""

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import trio

from chaos.figures import record
from chaos.load import wait_for
from chaos.marks import CHAOS
from hopper_broker.app import App
from tests.conftest import BrokerProcess, StartBroker, eventually, free_port
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

MiB = 1024 * 1024


async def served(port: int, n: int = 0) -> None:
    """A well-behaved client still gets its work done."""
    w = await Wire.open(port, hello={"wid": f"good-{n}"})
    jid = f"good-{n:06d}"
    with trio.fail_after(5):
        assert await w.call("PUSH", job(jid, queue="good")) == b"OK"
        assert json.loads(await w.call("FETCH", "good"))["jid"] == jid
        assert await w.call("ACK", {"jid": jid}) == b"OK"
    await w.aclose()


async def connections(port: int) -> int:
    w = await Wire.open(port, hello={})
    count: int = json.loads(await w.call("INFO"))["server"]["connections"]
    await w.aclose()
    return count - 1  # not this one


# -- lines and JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize("newline", [False, True])
async def test_a_line_over_the_limit_is_refused(broker: App, newline: bool) -> None:
    w = await Wire.open(broker.port, hello={})
    data = b"PUSH " + b"x" * (16 * MiB + 10) + (b"\r\n" if newline else b"")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.send, data)  # the server may close before it has read it all
        with pytest.raises(WireError, match=r"^ERR line too long \(max 16777216 bytes\)$"):
            await w.reply()
        assert await w.closed()
        nursery.cancel_scope.cancel()
    await served(broker.port)


async def test_hello_is_short(broker: App) -> None:
    """Before HELLO succeeds a client may send 64 KiB, not a whole command line."""
    w = await Wire.open(broker.port)
    await w.send(b'HELLO {"v":2,"hostname":"' + b"h" * 70_000)
    with pytest.raises(WireError, match=r"^ERR line too long \(max 65536 bytes\)$"):
        await w.reply()
    assert await w.closed()


async def test_huge_json_is_served(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    big = "ü" * (6 * MiB)  # 12 MiB of UTF-8, under the 16 MiB line limit
    payload = json.dumps(job("huge-0001", args=[big, {"k": list(range(1000))}]), ensure_ascii=False)
    assert await w.call("PUSH", payload) == b"OK"
    fetched = json.loads(await w.call("FETCH", "default"))
    assert fetched["args"][0] == big
    assert await w.call("ACK", {"jid": "huge-0001"}) == b"OK"
    many = [job(f"many-{n:06d}") for n in range(20_000)]
    assert json.loads(await w.call("PUSHB", many)) == {}
    assert json.loads(await w.call("INFO"))["faktory"]["queues"]["default"] == 20_000


@pytest.mark.parametrize(
    ("verb", "template"),
    [
        ("PUSH", '{"jid":"deep-0001","jobtype":"x","args":%s}'),
        ("PUSH", '{"jid":"deep-0002","jobtype":"x","args":[],"custom":{"a":%s}}'),
        ("PUSHB", '[{"jid":"deep-0003","jobtype":"x","args":%s}]'),
        ("ACK", '{"jid":%s}'),
        ("FAIL", '{"jid":"deep-0004","backtrace":%s}'),
        ("BEAT", '{"wid":%s}'),
        ("MUTATE", '{"cmd":"kill","target":"dead","filter":{"jids":%s}}'),
    ],
    ids=["push-args", "push-custom", "pushb", "ack", "fail", "beat", "mutate"],
)
async def test_deeply_nested_json_gets_an_error(broker: App, verb: str, template: str) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(WireError, match=r"^ERR ") as refused:
        await w.call(verb, template % deep)
    assert await w.call("PUSH", job("after-0001")) == b"OK"  # the connection carries on
    assert "internal error" not in str(refused.value)  # a clear answer


@pytest.mark.parametrize(
    ("verb", "arg"),
    [
        ("PUSH", b'{"jid":"bad-\xb0-0001","jobtype":"x","args":[]}'),
        ("PUSHB", b'[{"jid":"bad-0002","jobtype":"x","args":["\xff"]}]'),
        ("ACK", b'{"jid":"\xed\xa0\x80"}'),
        ("FAIL", b'{"jid":"bad-0003","message":"\xc3"}'),
        ("BEAT", b'{"wid":"\xb0"}'),
        ("MUTATE", b'{"cmd":"kill","target":"dead","filter":{"regexp":"\xb0"}}'),
    ],
    ids=["push", "pushb", "ack", "fail", "beat", "mutate"],
)
async def test_invalid_utf8_gets_a_json_error(broker: App, verb: str, arg: bytes) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    with pytest.raises(WireError, match=r"^ERR ") as refused:
        await w.call(verb, arg)
    assert await w.call("PUSH", job("after-0001")) == b"OK"  # the connection carries on
    assert "internal error" not in str(refused.value)


def test_invalid_utf8_hello_is_refused_quietly(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    broker = broker_process()
    for hello in (b'HELLO {"v":2,"hostname":"\xb0"}', b'HELLO {"v":2,"wid":"\xff"}'):
        with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
            assert sock.recv(100).startswith(b"+HI")
            sock.sendall(hello + b"\r\n")
            assert sock.recv(100) == b""  # closed without a word, as any bad HELLO
    assert broker.stop() == 0
    assert "Traceback" not in broker.log.read_text()


# -- slow clients -------------------------------------------------------------------------------


async def test_slowloris_line_is_cut_off(start_broker: StartBroker) -> None:
    """Bytes trickling in keep a connection active, but a line must be done in line_timeout."""
    app = await start_broker(line_timeout=0.5)
    w = await Wire.open(app.port, hello={})
    with trio.fail_after(5):
        await w.send(b'PUSH {"jid":')

        async def trickle() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                for _ in range(50):
                    await trio.sleep(0.05)
                    await w.send(b" ")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trickle)
            with pytest.raises(WireError, match=r"^ERR line not completed within 0\.5s$"):
                await w.reply()
            assert await w.closed()
            nursery.cancel_scope.cancel()
    await served(app.port)


async def test_slowloris_hello_is_cut_off(start_broker: StartBroker) -> None:
    app = await start_broker(handshake_timeout=0.5)
    w = await Wire.open(app.port)
    with trio.fail_after(5):
        for _ in range(50):
            try:
                await w.send(b" ")
            except trio.BrokenResourceError:
                break
            await trio.sleep(0.05)
        assert await w.closed()


async def test_a_client_that_reads_nothing_is_dropped(start_broker: StartBroker) -> None:
    app = await start_broker(line_timeout=0.5)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", app.port))
    stream = trio.SocketStream(sock)
    await stream.send_all(b'HELLO {"v":2}\r\n')
    # Each ACK of junk is answered with an error that repeats the junk: megabytes of replies.
    junk = b"ACK " + b"x" * 60_000 + b"\r\n"
    async with trio.open_nursery() as nursery:

        async def flood() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                for _ in range(400):
                    await stream.send_all(junk)

        nursery.start_soon(flood)
        await eventually(lambda: connections(app.port), timeout=5)  # it is being served
        await eventually(lambda: no_connections(app.port), timeout=10)
        nursery.cancel_scope.cancel()
    await stream.aclose()
    await served(app.port)


async def no_connections(port: int) -> bool:
    return await connections(port) == 0


@pytest.mark.timing
async def test_a_flood_of_bad_passwords_does_not_stall_others(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    """Each HELLO costs thousands of hash rounds; they run beside the event loop, not on it."""
    broker = broker_process("--password", "pw")
    good = await Wire.open(broker.port, hello={}, password="pw")
    slowest = 0.0

    async def bad_hellos(done: trio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(OSError, trio.BrokenResourceError, EOFError, WireError):
                w = await Wire.open(broker.port)
                try:
                    await w.call("HELLO", {"v": 2, "pwdhash": "0" * 64})
                finally:
                    await w.aclose()

    done = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(400):
            nursery.start_soon(bad_hellos, done)
        for _ in range(40):
            started = trio.current_time()
            assert await good.call("INFO")
            slowest = max(slowest, trio.current_time() - started)
            await trio.sleep(0.05)
        done.set()
    assert slowest < 0.3, slowest


# -- many connections ---------------------------------------------------------------------------


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class LimitedBroker:
    """A broker process whose open-file soft limit starts at 1024, as on many systems."""

    def __init__(self, redis_url: str, *args: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPPER_", "FAKTORY_"))}
        command = [sys.executable, "-m", "hopper_broker", "run", "--processes", "1", "--bind"]
        self.process = subprocess.Popen(
            [*command, f"127.0.0.1:{self.port}", "--redis-url", redis_url, *args],
            env=env,
            preexec_fn=_soft_fd_limit_1024,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            assert self.process.poll() is None, "the broker exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False

        wait_for(listening, 20, "broker listening")


def _soft_fd_limit_1024() -> None:
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    )


@pytest.fixture
def limited_broker(redis_url: str) -> Iterator[LimitedBroker]:
    broker = LimitedBroker(redis_url, "--max-connections", "2500", "--handshake-timeout", "1")
    yield broker
    broker.process.kill()
    broker.process.wait(10)


@pytest.mark.timeout(180)
async def test_thousands_of_connections(limited_broker: LimitedBroker) -> None:
    port = limited_broker.port
    opened: list[Wire] = []
    limit = trio.CapacityLimiter(200)  # connections opened at once

    async def open_one(n: int) -> None:
        async with limit:
            opened.append(await Wire.open(port, hello={"wid": f"w{n}"} if n % 2 else {}))

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for n in range(2500):
                nursery.start_soon(open_one, n)
        extra = [await Wire.open(port) for _ in range(20)]
        for w in extra:  # over max_connections: a clear answer
            with pytest.raises(WireError, match=r"^ERR too many connections: 2500$"):
                await w.call("HELLO", {"v": 2})
        async with trio.open_nursery() as nursery:
            for n, w in enumerate(opened):
                nursery.start_soon(w.call, "PUSH", job(f"conn-{n:06d}"))
        rss_busy = vm_rss_kb(limited_broker.process.pid)
        for w in opened[:100]:
            await w.aclose()
        await served(port)
        for w in [*opened[100:], *extra]:
            await w.aclose()
        await eventually(lambda: no_connections(port), timeout=20)
    assert limited_broker.process.poll() is None
    record("connections", connections=2500, refused=20, rss_mb=rss_busy // 1024, lost=0)


@pytest.mark.timing  # a good client's handshake must beat a 1 s deadline under the flood
@pytest.mark.parametrize(
    "attempts", [pytest.param(3000, id="fast"), pytest.param(60_000, id="chaos", marks=CHAOS)]
)
async def test_connection_flood_keeps_serving_others(
    limited_broker: LimitedBroker, attempts: int
) -> None:
    port = limited_broker.port
    rss_before = vm_rss_kb(limited_broker.process.pid)
    slowest = 0.0
    rounds = 0

    async def good_client(done: trio.Event) -> None:
        nonlocal slowest, rounds
        while not done.is_set():
            started = trio.current_time()
            await served(port, rounds)
            slowest = max(slowest, trio.current_time() - started)
            rounds += 1

    async def flood(n: int) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        kind = n % 4
        if kind == 1:
            await stream.send_all(b"\x16\x03\x01 garbage\r\n")
        elif kind == 2:
            await stream.send_all(b'HELLO {"v":2}\r\nINFO\r\n')
        elif kind == 3:  # silent: held until the handshake deadline (1 s)
            with trio.move_on_after(3):
                await stream.receive_some(1024)
        await stream.aclose()

    done = trio.Event()
    limit = trio.CapacityLimiter(500)

    async def flood_one(n: int) -> None:
        async with limit:
            with contextlib.suppress(OSError, trio.BrokenResourceError):
                await flood(n)  # refused or reset under the flood: that is the point

    async with trio.open_nursery() as nursery:
        nursery.start_soon(good_client, done)
        async with trio.open_nursery() as flooding:
            for n in range(attempts):
                flooding.start_soon(flood_one, n)
        done.set()
    await eventually(lambda: no_connections(port), timeout=20)
    rss_after = vm_rss_kb(limited_broker.process.pid)
    assert limited_broker.process.poll() is None
    assert rounds > 0 and slowest < 5
    assert rss_after - rss_before < 100 * 1024  # KiB
    record(
        "connection-flood",
        attempts=attempts,
        good_rounds=rounds,
        slowest_good_round_s=round(slowest, 3),
        rss_growth_mb=(rss_after - rss_before) // 1024,
        lost=0,
    )
