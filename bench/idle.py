"""What a broker costs while it has nothing to do, with many queues known.

`python -m bench.idle [--queues 5000 50000] [--seconds 30]`: for each queue count, a fresh
broker (its own embedded redis-server, default settings) is made to know that many queues as a
user would (one job pushed to each, fetched and acknowledged), left alone, and measured: the CPU
of the broker and of its redis-server over `--seconds` of idleness (% of one core), then how
long after its push a job scheduled 1 s ahead can be fetched. Prints a table and a `summary:`
line.
"""

import argparse
import json
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import hiredis

from bench.machine import describe
from bench.results import Result
from bench.servers import HopperServer, cpu_seconds, hopper_server, scratch_dir

SETTLE = 3.0  # seconds left to the broker after the set-up, before measuring
BATCH = 1000  # jobs per PUSHB, commands per pipelined write
DELAY = 1.0  # seconds ahead the probe job is scheduled


class Raw:
    """One raw protocol connection, pipelining whole batches of commands."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = hiredis.Reader()
        self.replies(1)  # +HI
        self.calls([b'HELLO {"v":2,"wid":"idle-bench"}'])

    def calls(self, lines: Sequence[bytes]) -> list[Any]:
        self.sock.sendall(b"".join(line + b"\r\n" for line in lines))
        return self.replies(len(lines))

    def replies(self, count: int) -> list[Any]:
        found: list[Any] = []
        while len(found) < count:
            reply = self.reader.gets()
            if reply is False:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("the broker closed the connection")
                self.reader.feed(data)
                continue
            if isinstance(reply, hiredis.ReplyError):
                raise RuntimeError(str(reply))
            found.append(reply)
        return found

    def close(self) -> None:
        self.sock.close()


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def know_queues(conn: Raw, queues: Sequence[str]) -> None:
    """One job pushed to each queue, fetched and acknowledged."""
    for chunk in chunks(queues, BATCH):
        jobs = [{"jid": f"idle-{q}", "jobtype": "x", "args": [], "queue": q} for q in chunk]
        assert conn.calls([b"PUSHB " + json.dumps(jobs).encode()]) == [b"{}"]
        fetched = conn.calls([f"FETCH {q}".encode() for q in chunk])
        acks = [b'ACK {"jid":"%s"}' % json.loads(p)["jid"].encode() for p in fetched]
        assert conn.calls(acks) == [b"OK"] * len(acks)


def scheduled_delay(conn: Raw, queue: str) -> float:
    """Seconds from the push of a job scheduled DELAY ahead until a FETCH returns it."""
    at = time.time() + DELAY
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
    job = {"jid": "idle-probe", "jobtype": "x", "args": [], "queue": queue, "at": stamp}
    pushed = time.monotonic()
    assert conn.calls([b"PUSH " + json.dumps(job).encode()]) == [b"OK"]
    while conn.calls([f"FETCH {queue}".encode()]) == [None]:  # each FETCH waits up to 2 s
        if time.monotonic() - pushed > 30:
            raise RuntimeError("the scheduled job never came")
    return time.monotonic() - pushed


def measure(count: int, seconds: float) -> Result:
    """The `idle` workload of the harness: `count` queues known, then `seconds` of idleness."""
    queues = [f"tenant-{n:06d}" for n in range(max(count, 1))]
    with scratch_dir() as root, hopper_server(root) as hopper:
        conn = Raw(hopper.port)
        started = time.monotonic()
        know_queues(conn, queues)
        setup = time.monotonic() - started
        time.sleep(SETTLE)
        broker, redis_cpu = idle_cpu(hopper, seconds)
        delay = scheduled_delay(conn, queues[-1])  # the last a per-queue loop would visit
        conn.close()
    result = Result("idle", "hopper", concurrency=count, seconds=seconds)
    result.extra = {
        "broker_pct": round(broker, 2),
        "redis_pct": round(redis_cpu, 2),
        "total_pct": round(broker + redis_cpu, 2),
        "scheduled_delay_s": round(delay, 3),
        "setup_s": round(setup, 1),
    }
    return result


def idle_cpu(hopper: HopperServer, seconds: float) -> tuple[float, float]:
    """% of one core used by the broker and by its redis-server over `seconds`."""
    started = time.monotonic()
    broker, redis_ = cpu_seconds([hopper.pid]), cpu_seconds([hopper.redis.pid])
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    broker = cpu_seconds([hopper.pid]) - broker
    redis_ = cpu_seconds([hopper.redis.pid]) - redis_
    return 100 * broker / elapsed, 100 * redis_ / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, nargs="+", default=[5000])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    machine = describe()
    print(f"machine: {machine['cpu']}, load {machine['load_average']}")
    header = ("queues", "broker %", "redis %", "total %", "scheduled 1 s ahead: fetched after s")
    print(" | ".join(header) + " | set-up s")
    summary = []
    for count in args.queues:
        row = measure(count, args.seconds).extra
        print(
            f"{count} | {row['broker_pct']:.2f} | {row['redis_pct']:.2f} | {row['total_pct']:.2f}"
            f" | {row['scheduled_delay_s']:.2f} | {row['setup_s']:.1f}"
        )
        summary.append(f"idle_{count}_pct={row['total_pct']} delay_{count}_s=")
        summary[-1] += f"{row['scheduled_delay_s']}"
    print("summary: " + " ".join(summary))


if __name__ == "__main__":
    main()
