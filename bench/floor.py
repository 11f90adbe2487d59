"""What one command costs a server at the floor: a bare trio line server beside Hopper and the
reference Faktory server (when `FAKTORY_BIN` names it).

`python -m bench.floor`: each server on fresh processes; 20,000 lines from 1, then 10 blocking
connections, each waiting for its reply, as the one-command-at-a-time clients do. The lines:
`noop` (an unknown verb for Hopper and the reference, which answer `-ERR`; the bare server
answers `+OK` to anything) and `push` (a PUSH of a new job). Prints the server's and its
Redis's CPU µs per line (from /proc/<pid>/stat). The bare server does no work at all, so its
figure is what trio's loop and the kernel's loopback take per request: the floor any trio
server pays, whatever its commands do.
"""

import argparse
import functools
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from bench.ab import broker, shim
from bench.servers import (
    cpu_seconds,
    free_port,
    hopper_answers,
    reference_binary,
    reference_server,
    running,
    wait_until,
)

LINES = 20_000
Line = Callable[[int, int], bytes]
SHAPES: dict[str, Line] = {
    "noop": lambda connection, i: b"NOPE x\r\n",
    "push": lambda connection, i: (
        b'PUSH {"jid":"floor-%d-%d","jobtype":"x","args":[]}\r\n' % (connection, i)
    ),
}


async def _answer(stream: trio.SocketStream) -> None:
    """Greet, then answer every line with +OK."""
    await stream.send_all(b'+HI {"v":2}\r\n')
    pending = b""
    while data := await stream.receive_some(65536):
        pending += data
        *lines, pending = pending.split(b"\r\n")
        for _ in lines:
            await stream.send_all(b"+OK\r\n")


def serve_bare(port: int) -> None:
    """The bare trio line server, on 127.0.0.1:`port` until killed."""
    trio.run(functools.partial(trio.serve_tcp, _answer, port, host="127.0.0.1"))


@contextmanager
def bare_server(workdir: Path) -> Iterator[tuple[int, int, int]]:
    """The bare server's port and pid (no Redis: 0)."""
    port, log = free_port(), workdir / "bare.log"
    with running([sys.executable, "-m", "bench.floor", "--serve", str(port)], log) as process:
        wait_until(functools.partial(hopper_answers, port), process, log)
        yield port, process.pid, 0


@contextmanager
def hopper(workdir: Path) -> Iterator[tuple[int, int, int]]:
    with broker(shim("floor", Path(__file__).parent.parent, workdir), workdir) as ids:
        yield ids


@contextmanager
def reference(workdir: Path) -> Iterator[tuple[int, int, int]]:
    with reference_server(workdir, reference_binary()) as server:
        yield server.port, server.pid, server.redis_pid


def send(port: int, connection: int, lines: int, line: Line) -> None:
    """`lines` lines on one connection (after HI and HELLO), each after the reply before."""
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as replies:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies.readline()
        sock.sendall(b'HELLO {"v":2}\r\n')
        replies.readline()
        for i in range(lines):
            sock.sendall(line(connection, i))
            replies.readline()


def cpu(pid: int) -> float:
    """CPU seconds of `pid` so far; 0 for no process (the bare server has no Redis)."""
    return cpu_seconds([pid]) if pid else 0.0


def measure(port: int, pids: tuple[int, int], connections: int, line: Line) -> str:
    """Lines/s and the CPU µs per line of the server and its Redis."""
    before = [cpu(pid) for pid in pids]
    began = time.perf_counter()
    threads = [
        threading.Thread(target=send, args=(port, c, LINES // connections, line))
        for c in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = LINES / (time.perf_counter() - began)
    server, store = ((cpu(pid) - b) / LINES * 1e6 for pid, b in zip(pids, before, strict=True))
    return f"{rate:8,.0f} lines/s  server {server:6.1f} µs  redis {store:5.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_bare(args.serve)
        return
    servers = {"bare trio": bare_server, "hopper": hopper}
    if reference_binary():
        servers["reference"] = reference
    for name, start in servers.items():
        for shape, line in SHAPES.items():
            if name == "bare trio" and shape != "noop":
                continue
            with tempfile.TemporaryDirectory(prefix="floor-") as tmp, start(Path(tmp)) as ids:
                port, pid, redis_pid = ids
                for connections in (1, 10):
                    figures = measure(port, (pid, redis_pid), connections, line)
                    print(f"{name:<9} {shape:<4} conns={connections:<2} {figures}", flush=True)


if __name__ == "__main__":
    main()
