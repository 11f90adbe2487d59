"""What the history costs and how fast it answers, with a million archived jobs.

`python -m bench.history [--jobs 1000000] [--queues 10] [--small 100000]`: a fresh broker (its
own embedded redis-server; finished_ttl 0, so that the memory measured is the archive's alone)
runs `--jobs` jobs through PUSHB, FETCH and ACK over `--queues` queues and 4 jobtypes (1 in 50
fails for good: dead). Then, with the broker idle:
- memory per archived job (Redis used_memory before and after, / jobs), with args and, on a
  second broker with history_args off, without (`--small` jobs);
- HISTORY pages (p50/p99 ms over the wire, 50 tries each): one queue, one queue + jobtype +
  state, every queue merged, a deep page (until = the middle of the range), a walk of 20 pages
  by cursor from the middle, 1,000 entries at once, and a jid looked up in every queue;
- retention: a pass that deletes nothing (Redis commands per pass, whatever is kept), and a
  reload that lowers `max` by 10 % (Redis CPU per entry deleted).
Prints a table and a `summary:` line; figures go to docs/benchmarks.md by hand.
"""

import argparse
import json
import os
import signal
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.idle import BATCH, Raw
from bench.machine import describe
from bench.results import Result
from bench.servers import HopperServer, hopper_server, scratch_dir

JOBTYPES = ("SendEmail", "ResizeImage", "ChargeCard", "SyncCrm")
TRIES = 50  # tries of each query
DEAD_EVERY = 50  # one job in this many fails with retry 0... dies (retry 1 would wait)


def fill(conn: Raw, jobs: int, queues: int) -> None:
    """Run `jobs` jobs through PUSHB, FETCH and ACK (or FAIL: dead) in batches of BATCH."""
    for start in range(0, jobs, BATCH):
        batch = []
        for n in range(start, min(start + BATCH, jobs)):
            dies = n % DEAD_EVERY == 0
            batch.append(
                {
                    "jid": f"hist-{n:08d}",
                    "jobtype": JOBTYPES[n % len(JOBTYPES)],
                    "queue": f"queue-{n % queues}",
                    "args": [f"user{n}@example.com", n, {"plan": "pro"}],
                    "retry": -1 if dies else 25,  # -1: dead at its first failure
                }
            )
        assert conn.calls([b"PUSHB " + json.dumps(batch).encode()]) == [b"{}"]
        fetched = conn.calls([f"FETCH {job['queue']}".encode() for job in batch])
        ends = []
        for raw in fetched:
            jid = json.loads(raw)["jid"]
            if int(jid[5:]) % DEAD_EVERY == 0:
                ends.append(b'FAIL {"jid":"%s","errtype":"Boom","message":"no"}' % jid.encode())
            else:
                ends.append(b'ACK {"jid":"%s","result":{"ok":true}}' % jid.encode())
        assert conn.calls(ends) == [b"OK"] * len(ends)
        conn.calls([b'BEAT {"wid":"idle-bench"}'])  # a worker silent for worker_ttl is dropped


def used_memory(hopper: HopperServer) -> int:
    return int(hopper.redis.client.info("memory")["used_memory"])


def timed(conn: Raw, query: dict[str, Any] | Callable[[], dict[str, Any]]) -> dict[str, float]:
    """p50/p99 ms of a HISTORY query over TRIES tries."""
    spent = []
    for _ in range(TRIES):
        asked = query() if callable(query) else query
        line = b"HISTORY " + json.dumps(asked).encode()
        started = time.perf_counter()
        (reply,) = conn.calls([line])
        spent.append((time.perf_counter() - started) * 1000)
        assert json.loads(reply)["jobs"], asked
    spent.sort()
    return {"p50_ms": round(statistics.median(spent), 2), "p99_ms": round(spent[-1], 2)}


def walk_from_middle(conn: Raw, middle: str) -> dict[str, float]:
    """ms for 20 pages followed by cursor from the middle of the range (per page)."""
    (reply,) = conn.calls([b"HISTORY " + json.dumps({"until": middle}).encode()])
    cursor = json.loads(reply)["cursor"]
    started = time.perf_counter()
    for _ in range(20):
        (reply,) = conn.calls([b"HISTORY " + json.dumps({"cursor": cursor}).encode()])
        cursor = json.loads(reply)["cursor"]
    return {"per_page_ms": round((time.perf_counter() - started) * 1000 / 20, 2)}


def queries(conn: Raw, queues: int, jobs: int) -> dict[str, dict[str, float]]:
    (oldest,) = conn.calls([b'HISTORY {"queue":"queue-0","state":"done","count":1000}'])
    middle = json.loads(oldest)["jobs"][-1]["ended_at"]  # 1,000 entries back in queue-0
    found = {
        "one queue": timed(conn, {"queue": "queue-1"}),
        "queue+jobtype+state": timed(
            conn, {"queue": "queue-2", "jobtype": "ChargeCard", "state": "done"}
        ),
        "every queue merged": timed(conn, {}),
        "deep page (until)": timed(conn, {"queue": "queue-3", "until": middle}),
        "1000 at once": timed(conn, {"queue": "queue-4", "count": 1000}),
        "by jid": timed(conn, lambda: {"jid": f"hist-{int(time.time_ns()) % jobs:08d}"}),
    }
    found["cursor walk"] = walk_from_middle(conn, middle)
    return found


def retention(hopper: HopperServer, config: Path, keep: int) -> dict[str, float]:
    """Redis commands of an idle pass, then the Redis CPU per entry of a pass lowering max."""
    client = hopper.redis.client
    client.config_resetstat()
    time.sleep(5.5)  # history_interval 1 s: about five idle passes
    calls = sum(int(v["calls"]) for v in client.info("commandstats").values())
    idle_calls = calls / 5.5
    before = int(client.hget("hopper:g:{g}:history:count", "done") or 0)
    config.write_text(f"[retention.done]\nttl = 864000\nmax = {keep}\n")
    client.config_resetstat()
    os.kill(hopper.pid, signal.SIGHUP)
    deadline = time.monotonic() + 120
    while int(client.hget("hopper:g:{g}:history:count", "done") or 0) > keep:
        if time.monotonic() > deadline:
            raise RuntimeError("retention did not delete in time")
        time.sleep(0.2)
    stats = client.info("commandstats")
    fcall = stats.get("cmdstat_fcall", {})
    deleted = before - keep
    return {
        "idle_pass_commands_per_s": round(idle_calls, 1),
        "deleted": deleted,
        "redis_us_per_deleted": round(float(fcall.get("usec", 0)) / max(deleted, 1), 2),
    }


def run(jobs: int, queues: int, with_args: bool, measure: bool) -> dict[str, Any]:
    with scratch_dir() as root:
        config = root / "hopper.toml"
        top = "" if with_args else "history_args = false\n"
        config.write_text(top + "[retention.done]\nttl = 864000\nmax = 10000000\n")
        flags = ["--finished-ttl", "0", "--history-interval", "1", "--config", str(config)]
        with hopper_server(root / "data", flags) as hopper:
            conn = Raw(hopper.port)
            before = used_memory(hopper)
            started = time.monotonic()
            fill(conn, jobs, queues)
            filled = time.monotonic() - started
            time.sleep(1.5)
            per_job = (used_memory(hopper) - before) / jobs
            found: dict[str, Any] = {"bytes_per_job": round(per_job), "fill_s": round(filled, 1)}
            if measure:
                found["queries"] = queries(conn, queues, jobs)
                found["retention"] = retention(hopper, config, int(jobs * 0.9 * 49 / 50))
            conn.close()
            return found


def measure(jobs: int) -> Result:
    """The `history` workload of the harness: `jobs` archived, then queried and purged."""
    full = run(jobs, 10, True, True)
    bare = run(max(jobs // 10, 1000), 10, False, False)
    queries_ = full["queries"]
    result = Result("history", "hopper", jobs=jobs, seconds=full["fill_s"])
    result.p50_ms = queries_["every queue merged"]["p50_ms"]
    result.p99_ms = queries_["every queue merged"]["p99_ms"]
    result.extra = {
        "bytes_per_job": full["bytes_per_job"],
        "bytes_per_job_no_args": bare["bytes_per_job"],
        **{
            f"{name} p99_ms": figures["p99_ms"]
            for name, figures in queries_.items()
            if "p99_ms" in figures
        },
        "cursor walk per page ms": queries_["cursor walk"]["per_page_ms"],
        "retention µs per deleted": full["retention"]["redis_us_per_deleted"],
        "idle pass commands/s": full["retention"]["idle_pass_commands_per_s"],
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--queues", type=int, default=10)
    parser.add_argument("--small", type=int, default=100_000)
    args = parser.parse_args()
    machine = describe()
    print(f"machine: {machine['cpu']}, load {machine['load_average']}")
    full = run(args.jobs, args.queues, True, True)
    bare = run(args.small, args.queues, False, False)
    print(f"{args.jobs} jobs archived in {full['fill_s']} s over {args.queues} queues")
    print(f"memory per archived job: {full['bytes_per_job']} B with args, ", end="")
    print(f"{bare['bytes_per_job']} B without (history_args off, {args.small} jobs)")
    print("query | p50 ms | p99 ms")
    for name, figures in full["queries"].items():
        print(f"{name} | " + " | ".join(str(v) for v in figures.values()))
    print(f"retention: {full['retention']}")
    print(
        f"summary: history_jobs={args.jobs} bytes_per_job={full['bytes_per_job']} "
        f"bytes_per_job_no_args={bare['bytes_per_job']} "
        f"merged_p99_ms={full['queries']['every queue merged']['p99_ms']} "
        f"deleted_us={full['retention']['redis_us_per_deleted']}"
    )


if __name__ == "__main__":
    main()
