"""Hopper-only workloads over the raw protocol: the reference-comparable load (10 connections),
1,000,000 queued jobs (workload 4) and 2,000 idle connections (workload 5)."""

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import rawload
from bench.rawload import Conn
from bench.results import Result, latency_ms, rate
from bench.servers import (
    HopperServer,
    hopper_server,
    reference_binary,
    reference_server,
    rss_mb,
    scratch_dir,
)

CONNECTIONS = 10  # as the minimal client the reference figures were measured with
BATCH = 100
SHAPES = {  # pushers, fetchers, batch
    "PUSH": (CONNECTIONS, 0, 1),
    "PUSHB": (CONNECTIONS, 0, BATCH),
    "FETCH+ACK": (0, CONNECTIONS, 1),
    "mixed": (CONNECTIONS // 2, CONNECTIONS // 2, 1),
}
WARM_UP = 2000  # jobs pushed, fetched and acknowledged by a fresh server before it is measured
SAMPLES = 1000  # timed commands per latency figure


def raw(kind: str, jobs: int) -> Result:
    """PUSH, PUSHB, FETCH+ACK (of a pre-filled queue) or both at once ("mixed"); with a
    reference server (reference_binary()), the same load on it right after, its figures in
    `extra` (reference_jobs_per_s, reference_cpu_us_per_job)."""
    with scratch_dir() as root, hopper_server(root) as hopper:
        figures = raw_load(kind, jobs, hopper.port, [hopper.pid, hopper.redis.pid])
    _, _, batch = SHAPES[kind]
    result = Result("raw", "hopper", kind, CONNECTIONS, batch, figures["jobs"], figures["seconds"])
    result.jobs_per_s = figures["jobs_per_s"]
    result.extra["server_cpu_us_per_job"] = figures["server_cpu_us_per_job"]
    result.extra["load_cpu_us_per_job"] = figures["load_cpu_us_per_job"]
    if reference := reference_binary():
        with scratch_dir() as root, reference_server(root, reference) as go:
            theirs = raw_load(kind, jobs, go.port, [go.pid, go.redis_pid])
        result.extra["reference_jobs_per_s"] = theirs["jobs_per_s"]
        result.extra["reference_cpu_us_per_job"] = theirs["server_cpu_us_per_job"]
    return result


def raw_load(kind: str, jobs: int, port: int, pids: list[int]) -> dict[str, Any]:
    """One raw load of shape `kind` on the server at `port` (server processes `pids`), after a
    warm-up; rawload's figures."""
    pushers, fetchers, batch = SHAPES[kind]
    rawload.run(port, WARM_UP, *SHAPES["mixed"], [])
    if kind == "FETCH+ACK":  # the jobs first, then the fetchers measured alone
        rawload.run(port, jobs, CONNECTIONS // 2, 0, BATCH, [])
    return rawload.run(port, jobs, pushers, fetchers, batch, pids)


def timed(command: Callable[[], object], samples: int = SAMPLES) -> list[float]:
    """Durations of `samples` calls, in seconds."""
    durations = []
    for _ in range(samples):
        start = time.perf_counter()
        command()
        durations.append(time.perf_counter() - start)
    return durations


def depth(jobs: int) -> Result:
    """Push `jobs` by PUSHB; broker RSS, Redis memory, FETCH latency with them all queued."""
    with scratch_dir() as root, hopper_server(root) as hopper:
        idle_rss = rss_mb(hopper.pid)
        pushed = rawload.run(hopper.port, jobs, 4, 0, BATCH, [hopper.pid, hopper.redis.pid])
        worker = Conn(hopper.port, wid=uuid.uuid4().hex)
        try:
            fetches = timed(functools.partial(fetch_ack, worker))
        finally:
            worker.close()
        result = Result("depth", "hopper", jobs=pushed["jobs"], seconds=pushed["seconds"])
        result.jobs_per_s = rate(pushed["jobs"], pushed["seconds"])
        result.p50_ms, result.p99_ms = latency_ms(fetches)
        result.extra = memory(hopper) | {"broker_rss_idle_mb": round(idle_rss, 1)}
    return result


def fetch_ack(conn: Conn) -> None:
    payload = conn.call(b"FETCH default")
    if payload is None:
        raise RuntimeError("FETCH found no job")
    conn.call(b'ACK {"jid":"' + rawload.jid_of(payload) + b'"}')


def memory(hopper: HopperServer) -> dict[str, float]:
    return {
        "broker_rss_mb": round(rss_mb(hopper.pid), 1),
        "redis_used_mb": round(hopper.redis.memory_mb(), 1),
        "redis_rss_mb": round(rss_mb(hopper.redis.pid), 1),
    }


def connections(idle: int) -> Result:
    """`idle` connections that said HELLO and nothing else, and one working connection:
    broker RSS, and the PUSH+FETCH+ACK latency of the working one with and without them."""
    with scratch_dir() as root, hopper_server(root) as hopper:
        working = Conn(hopper.port, wid=uuid.uuid4().hex)
        opened: list[Conn] = []
        try:
            cycle = functools.partial(push_fetch_ack, working)
            alone = timed(cycle)
            rss_alone = rss_mb(hopper.pid)
            opened.extend(Conn(hopper.port) for _ in range(idle))
            crowded = timed(cycle)
            result = Result("connections", "hopper", concurrency=idle, jobs=2 * SAMPLES)
            result.p50_ms, result.p99_ms = latency_ms(crowded)
            result.extra = memory(hopper) | {
                "broker_rss_alone_mb": round(rss_alone, 1),
                "p99_ms_alone": latency_ms(alone)[1],
            }
        finally:
            for conn in [working, *opened]:
                conn.close()
    return result


def push_fetch_ack(conn: Conn) -> None:
    conn.call(b"PUSH " + rawload.job(b"w" + uuid.uuid4().hex.encode(), 0))
    fetch_ack(conn)
