"""Raw-protocol load: pusher and fetcher processes, one connection each, one command at a time.

The same shape as the minimal 10-connection client the reference figures were measured with:
`python -m bench.rawload --port 7419 --jobs 100000 --pushers 5 --fetchers 5 [--batch 100]`.
Prints one JSON line: jobs, seconds, jobs/s, and the CPU µs per job of the server processes
given by --server-pids (broker and Redis), so that CPU per job can be compared.
"""

import argparse
import json
import multiprocessing
import socket
import time
import uuid
from multiprocessing.queues import Queue
from typing import Any

from bench.servers import cpu_seconds


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


def pusher(port: int, count: int, prefix: str, batch: int) -> None:
    """PUSH `count` jobs one by one, or PUSHB them `batch` at a time."""
    conn = Conn(port)
    tag = prefix.encode()
    if batch <= 1:
        for i in range(count):
            conn.call(b"PUSH " + job(tag, i))
        return
    for start in range(0, count, batch):
        jobs = b",".join(job(tag, i) for i in range(start, min(start + batch, count)))
        conn.call(b"PUSHB [" + jobs + b"]")


def fetcher(port: int, count: int, done: "Queue[int]") -> None:
    """FETCH and ACK `count` jobs of the default queue."""
    conn = Conn(port, wid=uuid.uuid4().hex)
    fetched = 0
    while fetched < count:
        payload = conn.call(b"FETCH default")
        if payload is None:
            continue
        conn.call(b'ACK {"jid":"' + jid_of(payload) + b'"}')
        fetched += 1
    done.put(fetched)


def run(
    port: int, jobs: int, pushers: int, fetchers: int, batch: int, pids: list[int]
) -> dict[str, Any]:
    """Run the pushers and fetchers at once; jobs/s and server CPU µs per job."""
    done: Queue[int] = multiprocessing.Queue()
    run_id = uuid.uuid4().hex[:8]
    procs = [
        multiprocessing.Process(target=pusher, args=(port, jobs // pushers, f"{run_id}{p}", batch))
        for p in range(pushers)
    ] + [
        multiprocessing.Process(target=fetcher, args=(port, jobs // fetchers, done))
        for _ in range(fetchers)
    ]
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    seconds = time.perf_counter() - t0
    cpu = cpu_seconds(pids) - cpu0
    total = (jobs // fetchers) * fetchers if fetchers else (jobs // pushers) * pushers
    return {
        "jobs": total,
        "seconds": round(seconds, 3),
        "jobs_per_s": round(total / seconds),
        "server_cpu_us_per_job": round(cpu / total * 1e6, 1) if pids else None,
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
