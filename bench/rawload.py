"""Raw-protocol load: pusher and fetcher connections, each with one command in flight.

The same shape as the minimal 10-connection client the reference figures were measured with,
driven from one process by one loop over the ready sockets (the broker sees the same 10
connections each waiting for its reply; the machine's cores are left to the servers measured,
where 10 blocking client processes took about 300 µs of CPU per job):
`python -m bench.rawload --port 7419 --jobs 100000 --pushers 5 --fetchers 5 [--batch 100]`;
`--ports 7419,7420` spreads the connections over several brokers, `--queues N` the jobs over
queues q0..qN-1 (on a Redis Cluster, over its shards; bench/cluster.py).
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
DEFAULT = [b"default"]  # the queue of a load not spread over queues
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


def job(prefix: bytes, i: int, queue: bytes = b"default") -> bytes:
    if queue == b"default":  # the payload every earlier figure was measured with
        return b'{"jid":"%s-%d","jobtype":"noop","args":[%d]}' % (prefix, i, i)
    return b'{"jid":"%s-%d","jobtype":"noop","queue":"%s","args":[%d]}' % (prefix, i, queue, i)


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


def pushes(prefix: bytes, count: int, batch: int, queues: list[bytes] = DEFAULT) -> Requests:
    """PUSH `count` jobs one by one, or PUSHB them `batch` at a time, over `queues` in turn;
    each reply is +OK."""
    if batch <= 1:
        for i in range(count):
            yield b"PUSH " + job(prefix, i, queues[i % len(queues)])
        return
    for start in range(0, count, batch):
        end = min(start + batch, count)
        jobs = b",".join(job(prefix, i, queues[i % len(queues)]) for i in range(start, end))
        yield b"PUSHB [" + jobs + b"]"


def fetches(count: int, wid: str, queues: list[bytes] = DEFAULT) -> Requests:
    """FETCH and ACK `count` jobs of `queues`: sent each reply, yields what to send;
    a BEAT every BEAT_EVERY seconds, as a worker does (the broker forgets a silent one)."""
    fetched, beat_at = 0, time.monotonic() + BEAT_EVERY
    while fetched < count:
        if time.monotonic() >= beat_at:
            yield b'BEAT {"wid":"' + wid.encode() + b'"}'
            beat_at = time.monotonic() + BEAT_EVERY
        payload = yield b"FETCH " + b" ".join(queues)
        if payload is None:
            continue
        yield b'ACK {"jid":"' + jid_of(payload) + b'"}'
        fetched += 1


def drive(
    ports: list[int],
    jobs: int,
    pushers: int,
    fetchers: int,
    batch: int,
    run_id: str,
    queues: list[bytes] = DEFAULT,
) -> int:
    """Run every connection from one loop over the ready sockets until all are done (the
    connections spread over `ports` in turn, each fetcher with its own order of `queues`);
    returns the jobs fetched (or pushed, without fetchers)."""
    selector = selectors.DefaultSelector()
    conns: list[Driven] = []
    for p in range(pushers):
        work = pushes(f"{run_id}{p}".encode(), jobs // pushers, batch, queues)
        conns.append(Driven(ports[p % len(ports)], "", work))
    for f in range(fetchers):
        wid = uuid.uuid4().hex
        order = queues[f % len(queues) :] + queues[: f % len(queues)]
        conns.append(
            Driven(ports[(pushers + f) % len(ports)], wid, fetches(jobs // fetchers, wid, order))
        )
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
    port: int,
    jobs: int,
    pushers: int,
    fetchers: int,
    batch: int,
    pids: list[int],
    *,
    ports: list[int] | None = None,
    queues: int = 0,
) -> dict[str, Any]:
    """Run the pushers and fetchers at once; jobs/s, server CPU µs per job, and this load
    loop's own CPU µs per job (what it takes from the machine it measures). `ports`: the
    brokers (else `port` alone); `queues`: spread over q0..q<queues-1> (0: the default one)."""
    run_id = uuid.uuid4().hex[:8]
    names = [f"q{n}".encode() for n in range(queues)] if queues else DEFAULT
    cpu0, own0, t0 = cpu_seconds(pids), time.process_time(), time.perf_counter()
    total = drive(ports or [port], jobs, pushers, fetchers, batch, run_id, names)
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
    parser.add_argument("--ports", default="", help="comma-separated broker ports (else --port)")
    parser.add_argument("--queues", type=int, default=0, help="spread over q0..qN-1")
    args = parser.parse_args()
    pids = [int(p) for p in args.server_pids.split(",") if p]
    ports = [int(p) for p in args.ports.split(",") if p] or None
    found = run(
        args.port, args.jobs, args.pushers, args.fetchers, args.batch, pids,
        ports=ports, queues=args.queues,
    )  # fmt: skip
    print(json.dumps(found))


if __name__ == "__main__":
    main()
