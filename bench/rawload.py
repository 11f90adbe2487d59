"""Raw-protocol load: pusher and fetcher connections, each with one command in flight.

The same shape as the minimal 10-connection client the reference figures were measured with,
driven from one process by one loop over the ready sockets (the broker sees the same 10
connections each waiting for its reply; the machine's cores are left to the servers measured,
where 10 blocking client processes took about 300 µs of CPU per job):
`python -m bench.rawload --port 7419 --jobs 100000 --pushers 5 --fetchers 5 [--batch 100]`.
Prints one JSON line: jobs, seconds, jobs/s, and the CPU µs per job of the server processes
given by --server-pids (broker and Redis), so that CPU per job can be compared.
"""

import argparse
import json
import selectors
import socket
import time
import uuid
from collections.abc import Generator
from typing import Any

from bench.servers import cpu_seconds

BEAT_EVERY = 10.0  # seconds between a fetcher's heartbeats (Faktory workers beat every 15)
# a connection's requests: sent each reply (bulk body, +line, None for a null bulk), yields the
# next request to send
Requests = Generator[bytes, bytes | None, None]


class Conn:
    """A blocking raw connection: one request, one reply."""

    def __init__(self, port: int, wid: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.line()
        hello = {"v": 2, "wid": wid} if wid else {"v": 2}
        self.call(b"HELLO " + json.dumps(hello).encode())

    def line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk
        line, self.buf = self.buf[:end], self.buf[end + 2 :]
        return line

    def call(self, request: bytes) -> bytes | None:
        """Send one command; its reply (bulk body, or the +line), None for a null bulk."""
        self.sock.sendall(request + b"\r\n")
        head = self.line()
        if head[:1] == b"-":
            raise RuntimeError(head.decode())
        if head[:1] != b"$":
            return head
        size = int(head[1:])
        if size < 0:
            return None
        while len(self.buf) < size + 2:
            self.buf += self.sock.recv(1 << 16)
        body, self.buf = self.buf[:size], self.buf[size + 2 :]
        return body

    def close(self) -> None:
        self.sock.close()


def job(prefix: bytes, i: int) -> bytes:
    return b'{"jid":"%s-%d","jobtype":"noop","args":[%d]}' % (prefix, i, i)


def jid_of(payload: bytes) -> bytes:
    start = payload.index(b'"jid":"') + 7
    return payload[start : payload.index(b'"', start)]


class Driven:
    """One non-blocking connection of the load loop, one command in flight: its next request
    and what to do with each reply."""

    def __init__(self, port: int, wid: str, requests: Requests) -> None:
        self.conn = Conn(port, wid)
        self.sock = self.conn.sock
        self.sock.setblocking(False)
        self.requests = requests
        self.buf = b""

    def reply(self) -> bytes | bool | None:
        """The next whole reply in the buffer (bulk body or +line, None for a null bulk), or
        False when it has not all come yet."""
        end = self.buf.find(b"\r\n")
        if end < 0:
            return False
        head = self.buf[:end]
        if head[:1] == b"-":
            raise RuntimeError(head.decode())
        if head[:1] != b"$":
            self.buf = self.buf[end + 2 :]
            return head
        size = int(head[1:])
        if size < 0:
            self.buf = self.buf[end + 2 :]
            return None
        if len(self.buf) < end + 2 + size + 2:
            return False
        body = self.buf[end + 2 : end + 2 + size]
        self.buf = self.buf[end + 2 + size + 2 :]
        return body


def pushes(prefix: bytes, count: int, batch: int) -> Requests:
    """PUSH `count` jobs one by one, or PUSHB them `batch` at a time; each reply is +OK."""
    if batch <= 1:
        for i in range(count):
            yield b"PUSH " + job(prefix, i)
        return
    for start in range(0, count, batch):
        jobs = b",".join(job(prefix, i) for i in range(start, min(start + batch, count)))
        yield b"PUSHB [" + jobs + b"]"


def fetches(count: int, wid: str) -> Requests:
    """FETCH and ACK `count` jobs of the default queue: sent each reply, yields what to send;
    a BEAT every BEAT_EVERY seconds, as a worker does (the broker forgets a silent one)."""
    fetched, beat_at = 0, time.monotonic() + BEAT_EVERY
    while fetched < count:
        if time.monotonic() >= beat_at:
            yield b'BEAT {"wid":"' + wid.encode() + b'"}'
            beat_at = time.monotonic() + BEAT_EVERY
        payload = yield b"FETCH default"
        if payload is None:
            continue
        yield b'ACK {"jid":"' + jid_of(payload) + b'"}'
        fetched += 1


def drive(port: int, jobs: int, pushers: int, fetchers: int, batch: int, run_id: str) -> int:
    """Run every connection from one loop over the ready sockets until all are done; returns
    the jobs fetched (or pushed, without fetchers)."""
    selector = selectors.DefaultSelector()
    conns: list[Driven] = []
    for p in range(pushers):
        conns.append(Driven(port, "", pushes(f"{run_id}{p}".encode(), jobs // pushers, batch)))
    for _ in range(fetchers):
        wid = uuid.uuid4().hex
        conns.append(Driven(port, wid, fetches(jobs // fetchers, wid)))
    for conn in conns:
        conn.sock.sendall(next(conn.requests) + b"\r\n")
        selector.register(conn.sock, selectors.EVENT_READ, conn)
    running = len(conns)
    while running:
        for key, _ in selector.select():
            conn = key.data
            chunk = conn.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("connection closed by the server")
            conn.buf += chunk
            while (reply := conn.reply()) is not False:
                try:
                    request = conn.requests.send(reply)
                except StopIteration:
                    selector.unregister(conn.sock)
                    conn.conn.close()
                    running -= 1
                    break
                conn.sock.sendall(request + b"\r\n")
    selector.close()
    return (jobs // fetchers) * fetchers if fetchers else (jobs // pushers) * pushers


def run(
    port: int, jobs: int, pushers: int, fetchers: int, batch: int, pids: list[int]
) -> dict[str, Any]:
    """Run the pushers and fetchers at once; jobs/s, server CPU µs per job, and this load
    loop's own CPU µs per job (what it takes from the machine it measures)."""
    run_id = uuid.uuid4().hex[:8]
    cpu0, own0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
    total = drive(port, jobs, pushers, fetchers, batch, run_id)
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(pids) - cpu0
    return {
        "jobs": total,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(total / seconds),
        "server_cpu_us_per_job": round(cpu / total * 1e6, 1) if pids else None,
        "load_cpu_us_per_job": round((time.process_time() - own0) / total * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=7419)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--pushers", type=int, default=5)
    parser.add_argument("--fetchers", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1, help="jobs per PUSHB (1: PUSH)")
    parser.add_argument("--server-pids", default="", help="comma-separated pids to measure")
    args = parser.parse_args()
    pids = [int(p) for p in args.server_pids.split(",") if p]
    print(json.dumps(run(args.port, args.jobs, args.pushers, args.fetchers, args.batch, pids)))


if __name__ == "__main__":
    main()
