"""Who gets in, and what the logs give away: password handshake, bind policy, secrets in logs."""

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from chaos.conn import Conn
from hopper_broker.config import Config
from hopper_broker.session import Session
from tests.conftest import BrokerProcess, StartBroker, free_port, on_rig
from tests.wire import Wire, WireError, pwdhash

SECRET = "pa55-Sekrit-xyzzy"
ARG_SECRET = "card-4111111111111111"


@on_rig
async def test_password_handshake(start_broker: StartBroker) -> None:
    app = await start_broker(password=SECRET)
    good = await Wire.open(app.port, hello={"wid": "w1"}, password=SECRET)
    assert await good.call("INFO")

    async def refused(hello: dict[str, object]) -> None:
        w = await Wire.open(app.port)
        with pytest.raises(WireError, match=r"^ERR Invalid password$"):
            await w.call("HELLO", hello)
        assert await w.closed()

    await refused({"v": 2, "pwdhash": pwdhash("wrong", "00", 4000)})
    await refused({"v": 2})
    # Each connection has its own salt and count: a hash made for one is no use on another.
    first, second = Session(SECRET), Session(SECRET)
    assert first.greeting() != second.greeting()
    await refused({"v": 2, "pwdhash": pwdhash(SECRET, first.salt, first.iterations)})


def test_password_comparison_is_constant_time() -> None:
    assert "compare_digest" in Session.handshake.__code__.co_names


@on_rig
def test_no_password_or_job_args_in_logs_at_the_default_level(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    broker = broker_process("--password", SECRET, "--max-line-bytes", "4096")
    conn = Conn(broker.port, {"wid": "w1"}, SECRET)
    conn.call("PUSH", {"jid": "sec-00001", "jobtype": "pay", "args": [ARG_SECRET], "retry": 1})
    conn.call("FETCH", "default")
    conn.call("FAIL", {"jid": "sec-00001", "message": ARG_SECRET, "backtrace": [ARG_SECRET]})
    secret = ARG_SECRET.encode()
    for bad in (
        b'PUSH {"jid":"' + secret + b'",',  # invalid JSON
        b'PUSH {"jid":"sec-00002","jobtype":"x","args":[' + b"[" * 2000 + secret,  # deep
        b"PUSH " + secret * 1000,  # line too long
    ):
        other = Conn(broker.port, {}, SECRET)
        other.sock.sendall(bad + b"\r\n")
        with contextlib.suppress(WireError):
            other.reply()
        other.close()
    with pytest.raises(WireError, match="Invalid password"):
        Conn(broker.port, {}, "not-" + SECRET)
    conn.close()
    assert broker.stop() == 0
    log = broker.log.read_text()
    assert "Hopper listening" in log
    assert SECRET not in log and ARG_SECRET not in log


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[str]:
    """A redis-server that wants a password; yields its unix:// URL, password included."""
    sock = tmp_path / "redis.sock"
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--requirepass", SECRET,
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"unix://:{SECRET}@{sock}"
    try:
        deadline = time.monotonic() + 10
        while not _answers(url):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def test_no_redis_password_in_logs(
    broker_process: Callable[..., BrokerProcess], guarded_redis: str
) -> None:
    broker = broker_process("--redis-url", guarded_redis, embedded=True)
    Conn(broker.port, {}).close()
    assert broker.stop() == 0
    log = broker.log.read_text()
    assert "Hopper listening" in log and SECRET not in log


def outward_address() -> str | None:
    """This machine's address on its default route, if it has one that is not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent for UDP connect
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@on_rig
async def test_listens_on_loopback_only_by_default(start_broker: StartBroker) -> None:
    assert Config().host == "127.0.0.1"
    app = await start_broker(bind=f"{Config().host}:0")
    address = outward_address()
    if address is None:
        pytest.skip("no non-loopback address to try from")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, app.port), timeout=5).close()
    socket.create_connection(("127.0.0.1", app.port), timeout=5).close()


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]", "example.com"])
def test_refuses_an_open_bind_without_a_password(redis_url: str, host: str) -> None:
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hopper_broker",
            "run",
            "--bind",
            f"{host}:{port}",
            "--redis-url",
            redis_url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "without a password" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
