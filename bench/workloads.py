"""Workloads 1-3 on every system: enqueue rate, end-to-end rate, push → start latency.

Each run gets a fresh server (a redis-server for a peer, a Hopper broker for Hopper), a
worker process started with the system's own CLI, and producers in their own processes.
"""

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.probe import Probe, Record
from bench.produce import Timing
from bench.results import Result, latency_ms, rate
from bench.servers import (
    ROOT,
    START_TIMEOUT,
    hopper_server,
    redis_server,
    reference_binary,
    reference_server,
    running,
    scratch_dir,
    tail,
)
from bench.systems import LATENCY_CONCURRENCY, Mode, System

BATCH = 100  # jobs per batch call
THREADS = 10  # producer threads in the "10 threads" shape, each waiting for its replies
THREADED = f"{THREADS} threads"
WORKER_STOP = 1.0  # seconds from SIGTERM to SIGKILL for a worker (its server goes next)


@dataclass(frozen=True)
class Stage:
    """Where one run happens: its scratch dir, server URL and the environment for clients."""

    dir: Path
    redis_url: str
    env: dict[str, str]


@contextmanager
def stage(system: System) -> Iterator[Stage]:
    """A fresh server for one run of `system`."""
    env = {"PYTHONPATH": str(ROOT)}
    with scratch_dir() as root:
        if system.backend == "hopper":
            with hopper_server(root / "hopper") as hopper:
                env |= {"HOPPER_URL": hopper.url, "FAKTORY_URL": hopper.url}
                yield Stage(root, hopper.redis.url, env)
        elif system.backend == "reference":
            (root / "faktory").mkdir()
            with reference_server(root / "faktory", reference_binary()) as go:
                yield Stage(root, "", env | {"FAKTORY_URL": f"tcp://127.0.0.1:{go.port}"})
        else:
            with redis_server(root / "redis") as redis:
                yield Stage(root, redis.url, env | {"BENCH_REDIS_URL": redis.url})


def produce(system: System, where: Stage, *args: str, timeout: float) -> Timing:
    """Run one producer process (bench.produce) to its end; its timing."""
    log = where.dir / "producer.log"
    log.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "bench.produce", system.name, *args]
    with running(argv, log, where.env) as process:
        process.wait(timeout)
        if process.returncode != 0:
            raise RuntimeError(f"producer exited with {process.returncode}: {tail(log)}")
    line = next(ln for ln in reversed(log.read_text().splitlines()) if ln.startswith("{"))
    return Timing(**json.loads(line))


def enqueue(system: System, batch: int, jobs: int, max_seconds: float, mode: str = "") -> Result:
    """Workload 1: one producer pushes as fast as it can, no worker running. Mode "pipeline":
    single pushes through the client's pipeline (each confirmed before the last timestamp);
    mode THREADED: single pushes from THREADS threads sharing one client."""
    result = Result("enqueue", system.name, mode, batch=batch)
    with stage(system) as where:
        args = ["--jobs", str(jobs), "--batch", str(batch), "--max-seconds", str(max_seconds)]
        args += ["--pipeline"] if mode == "pipeline" else []
        args += ["--threads", str(THREADS)] if mode == THREADED else []
        timing = produce(system, where, *args, timeout=max_seconds + 30)
    result.jobs, result.seconds = timing.pushed, round(timing.last - timing.first, 3)
    result.jobs_per_s = rate(timing.pushed, result.seconds)
    return result


@dataclass(frozen=True)
class Worker:
    """A running worker process: the probe its jobs write to, and whether it still lives."""

    probe: Probe
    alive: Callable[[], bool]


@contextmanager
def worker(system: System, mode: Mode, concurrency: int, where: Stage) -> Iterator[Worker]:
    """The system's worker process, proven up by one warm-up job."""
    probe = Probe(where.dir / "probe.bin")
    env = where.env | probe.env | mode.env | {"BENCH_CONCURRENCY": str(concurrency)}
    log = where.dir / "worker.log"
    argv = mode.argv(concurrency, where.redis_url)
    with running(argv, log, env, timeout=WORKER_STOP) as process:
        produce(system, where, "--warmup", timeout=START_TIMEOUT)
        if not probe.wait(1, START_TIMEOUT, alive=lambda: process.poll() is None):
            raise RuntimeError(f"worker did not run the warm-up job: {tail(log)}")
        probe.mark()
        yield Worker(probe, lambda: process.poll() is None)


def drain(
    system: System, mode: Mode, concurrency: int, produce_args: list[str], timeout: float
) -> tuple[Timing, bool, list[Record]]:
    """Run one producer (bench.produce with `produce_args`) against one worker process:
    (the producer's timing, whether every pushed job ran in time, the jobs' records)."""
    with stage(system) as where, worker(system, mode, concurrency, where) as work:
        timing = produce(system, where, *produce_args, timeout=timeout + 30)
        done = work.probe.wait(timing.pushed, timeout, work.alive)
        records = work.probe.records()
    if not records:
        raise RuntimeError("no job ran")
    return timing, done, records


def end_to_end(
    system: System, mode: Mode, concurrency: int, jobs: int, timeout: float, threads: int = 1
) -> Result:
    """Workload 2: `jobs` pushed (in batches where the system has them, or singly from
    `threads` threads) while one worker process drains them; from the first push to the last
    job started."""
    jobs = max(100, int(jobs * mode.jobs_scale))
    batch = BATCH if system.batch and threads == 1 else 1
    name = mode.name if threads == 1 else fed_by(mode.name)
    result = Result("end_to_end", system.name, name, concurrency, batch)
    args = ["--jobs", str(jobs), "--batch", str(batch), "--max-seconds", str(timeout)]
    args += ["--threads", str(threads)]
    timing, done, records = drain(system, mode, concurrency, args, timeout)
    result.jobs = len(records)
    result.seconds = round(max(r.started for r in records) - timing.first, 3)
    result.jobs_per_s = rate(result.jobs, result.seconds)
    result.status = "ok" if done and timing.pushed == jobs else "timeout"
    return result


def fed_by(mode: str) -> str:
    """The end-to-end row of a worker mode fed by single pushes from THREADS threads."""
    return f"{mode}, fed by {THREADED}"


def latency(system: System, jobs_per_s: float, seconds: float, timeout: float) -> Result:
    """Workload 3: single pushes at a fixed rate to an idle worker (fast mode, concurrency
    10); push → job start latency."""
    mode = system.mode(system.fast)
    concurrency = max(c for c in mode.concurrencies if c <= LATENCY_CONCURRENCY)
    jobs = int(jobs_per_s * seconds)
    result = Result("latency", system.name, mode.name, concurrency)
    args = ["--jobs", str(jobs), "--rate", str(jobs_per_s), "--max-seconds", str(timeout)]
    timing, done, records = drain(system, mode, concurrency, args, timeout)
    result.jobs, result.seconds = len(records), round(timing.last - timing.first, 3)
    result.jobs_per_s = rate(timing.pushed, result.seconds)
    result.p50_ms, result.p99_ms = latency_ms([r.started - r.sent for r in records])
    result.status = "ok" if done and timing.pushed == jobs else "timeout"
    return result
