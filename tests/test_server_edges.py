"""The server at its edges: pipelined commands and new clients met by a shutdown, brokers
sharing a port while one stops, a slowloris over TLS, a reload while processes start."""

import contextlib
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from hopper_broker.app import App
from tests.conftest import StartBroker, clean_env, eventually
from tests.wire import Wire, WireError, job


async def _stall(port: int) -> trio.SocketStream:
    """A client that pipelines junk and reads nothing: its connection stays busy sending."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(b'HELLO {"v":2}\r\n')
    return stream


async def _stop_held_by(app: App, stuck: trio.SocketStream, nursery: trio.Nursery) -> None:
    """Stop `app` while `stuck` (from _stall) floods it with commands whose replies it does not
    read (in `nursery`), so that the broker is blocked sending to it: its grace period runs."""

    async def flood() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            for _ in range(400):
                await stuck.send_all(b"ACK " + b"x" * 60_000 + b"\r\n")

    nursery.start_soon(flood)
    await eventually(lambda: any(c.send_started for c in app.server.connections))
    app.stop()
    await eventually(lambda: app.server.closing)


async def test_pipelined_commands_at_shutdown_each_get_a_reply(start_broker: StartBroker) -> None:
    """protocol.md: 'During shutdown every command gets -ERR shutdown in progress'."""
    app = await start_broker(fetch_timeout=30)
    w = await Wire.open(app.port, hello={})
    before = app.manager.stats.commands
    await w.send(
        b"FETCH q1\r\nFETCH q2\r\nPUSH " + json.dumps(job("jid-after-1")).encode() + b"\r\n"
    )
    # the three commands were read; the first FETCH waits (30 s): shut down while it does
    await eventually(lambda: app.manager.stats.commands >= before + 3)
    app.stop()
    replies = []
    with trio.fail_after(5):
        while True:
            try:
                replies.append(await w.reply())
            except WireError as exc:
                replies.append(f"-{exc}")
            except (EOFError, trio.BrokenResourceError):
                break
    assert replies == [None, "-ERR shutdown in progress", "-ERR shutdown in progress"]


async def test_a_client_connecting_during_shutdown_is_not_left_hanging(
    start_broker: StartBroker,
) -> None:
    """While the grace period runs (a connection still owes a reply), a new client is refused
    at once (the listener is closed), not queued by the kernel for a listener nobody serves."""
    app = await start_broker(line_timeout=60, shutdown_grace=5)
    stuck = await _stall(app.port)
    async with trio.open_nursery() as nursery:
        await _stop_held_by(app, stuck, nursery)
        outcome = "hang"
        with trio.move_on_after(2):
            try:
                late = await trio.open_tcp_stream("127.0.0.1", app.port)
            except OSError:
                outcome = "refused"
            else:
                try:
                    data = await late.receive_some(1000)
                    outcome = "closed" if not data else data.decode()
                except trio.BrokenResourceError:
                    outcome = "reset"
        nursery.cancel_scope.cancel()
    assert outcome != "hang"


async def _tls_wire(port: int, cert: Path) -> Wire:
    context = ssl.create_default_context(cafile=str(cert))
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    w = Wire(trio.SSLStream(tcp, context, server_hostname="127.0.0.1"))
    assert (await w.reply()).startswith(b"HI ")
    assert await w.call("HELLO", {"v": 2}) == b"OK"
    return w


async def test_tls_slowloris_line_gets_the_documented_error(
    start_broker: StartBroker, certificate: tuple[Path, Path]
) -> None:
    """protocol.md: a line not completed within line_timeout is answered
    `-ERR line not completed within Ns` and the connection closed; over TLS too."""
    cert, key = certificate
    app = await start_broker(tls_cert=str(cert), tls_key=str(key), line_timeout=0.5)
    w = await _tls_wire(app.port, cert)
    assert await w.call("INFO")
    with trio.fail_after(5):
        await w.send(b'PUSH {"jid":')
        with pytest.raises(WireError, match=r"^ERR line not completed within 0\.5s$"):
            await w.reply()


async def test_brokers_sharing_a_port_one_stopping_the_other_gets_every_new_client(
    start_broker: StartBroker,
) -> None:
    """docs/processes.md: brokers started with reuse_port share a port (several systemd
    instances, or a supervisor's children). While one of them stops (its grace period running,
    a connection still owes a reply), every new client reaches the broker still serving."""
    stopping = await start_broker(reuse_port=True, shutdown_grace=10, line_timeout=60)
    serving = await start_broker(reuse_port=True, bind=f"127.0.0.1:{stopping.port}")
    assert serving.port == stopping.port
    # a client of the stopping broker that reads nothing keeps it in its grace period
    stuck = None
    for _ in range(100):
        candidate = await _stall(stopping.port)
        if await _lands_on(stopping, candidate):
            stuck = candidate
            break
        await candidate.aclose()
    assert stuck is not None
    async with trio.open_nursery() as nursery:
        await _stop_held_by(stopping, stuck, nursery)
        greeted = hanging = 0
        for _ in range(20):
            with trio.move_on_after(0.5) as waited:
                late = await trio.open_tcp_stream("127.0.0.1", serving.port)
                assert (await late.receive_some(100)).startswith(b"+HI")
                greeted += 1
                await late.aclose()
            hanging += waited.cancelled_caught
        nursery.cancel_scope.cancel()
    assert (greeted, hanging) == (20, 0)


async def _lands_on(app: App, stream: trio.SocketStream) -> bool:
    """Whether this fresh connection was accepted by `app` (its server counts it)."""
    server = app.server
    port = stream.socket.getsockname()[1]
    with trio.move_on_after(2):
        while True:
            for conn in server.connections:
                with contextlib.suppress(OSError):
                    if conn.sock.getpeername()[1] == port:
                        return True
            await trio.sleep(0.01)
    return False


def test_a_reload_while_the_supervisor_starts_its_children_is_harmless(
    redis_url: str, tmp_path: Path
) -> None:
    """docs/processes.md: 'SIGHUP is passed on: each child reloads.' A SIGHUP (systemctl
    reload) that comes while a child is still starting (no handler for it yet) leaves it
    alone: the broker keeps running and both children come to serve."""
    log = tmp_path / "hopper.log"
    with log.open("wb") as out:
        hopper = subprocess.Popen(
            [sys.executable, "-m", "hopper_broker", "run", "--processes", "2",
             "--bind", "127.0.0.1:0", "--dashboard-bind", "off", "--redis-url", redis_url],
            cwd=Path(__file__).resolve().parents[1], env=clean_env(),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while "started broker process 1" not in log.read_text():
            assert time.monotonic() < deadline and hopper.poll() is None, log.read_text()
            time.sleep(0.005)
        hopper.send_signal(signal.SIGHUP)  # a reload while the first child starts
        deadline = time.monotonic() + 20
        while len(re.findall("Hopper listening", log.read_text())) < 2:
            assert hopper.poll() is None, f"exited {hopper.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
    finally:
        if hopper.poll() is None:
            hopper.terminate()
            hopper.wait(20)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_an_events_subscriber_does_not_hold_shutdown(
    start_broker: StartBroker, certificate: tuple[Path, Path], tls: bool
) -> None:
    cert, key = certificate
    extra = {"tls_cert": str(cert), "tls_key": str(key)} if tls else {}
    app = await start_broker(shutdown_grace=8, **extra)
    w = await (_tls_wire(app.port, cert) if tls else Wire.open(app.port, hello={}))
    assert await w.call("EVENTS", "") == b"OK"
    await eventually(lambda: app.server.connections)
    began = trio.current_time()
    app.stop()
    await eventually(lambda: not app.server.connections, 15)
    assert trio.current_time() - began < 2  # not the grace period
