"""`python -m bench [--quick]`: every workload on every system, then tables, JSON, chart, summary.

The last line printed is the machine-readable summary. A full run (no --quick, no filter,
no --repeat) also rewrites docs/benchmarks.md and docs/benchmarks.png. `--repeat N` keeps the
best of N tries of each measurement, for a box where other work disturbs single runs.
"""

import argparse
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from bench import chart, docs, history, idle, report, scale, workloads
from bench.machine import describe
from bench.results import Result
from bench.servers import REFERENCE_BIN, ROOT, reference_binary, reference_version
from bench.systems import SYSTEMS, System

WORKLOADS = ("enqueue", "end_to_end", "latency", "raw", "depth", "connections", "idle", "history")
LATENCY_RATE = 1000.0  # jobs/s of the latency probe
BATCH_JOBS_FACTOR = 5  # batches push ~10× faster: more jobs keep the run as long


@dataclass(frozen=True)
class Size:
    """Job counts and time limits of one kind of run."""

    enqueue_jobs: int  # per single-push run; batch runs get BATCH_JOBS_FACTOR times more
    enqueue_seconds: float  # a producer stops after this long
    end_to_end_jobs: int
    concurrencies: tuple[int, ...]
    latency_seconds: float
    timeout: float  # seconds an end-to-end or latency run waits for its jobs after the pushes
    raw_jobs: int
    depth_jobs: int
    idle_connections: int
    idle_queues: int  # queues a broker knows while it is measured idle
    idle_seconds: float
    history_jobs: int  # archived jobs the history is queried over


FULL = Size(
    50_000, 3.0, 20_000, (1, 10, 50), 5.0, 20.0, 100_000, 1_000_000, 2_000, 5_000, 20.0, 1_000_000
)
QUICK = Size(5_000, 1.0, 2_000, (1, 10), 1.0, 5.0, 10_000, 50_000, 200, 500, 3.0, 20_000)


class Bench:
    """Runs the plan, one run at a time, printing progress to stderr."""

    def __init__(
        self, size: Size, systems: list[System], workloads: list[str], repeat: int = 1
    ) -> None:
        self.size = size
        self.systems = systems
        self.workloads = workloads
        self.repeat = repeat
        self.results: list[Result] = []
        self.start = time.monotonic()

    def attempt(self, template: Result, run: Callable[..., Result], *args: Any) -> None:
        """Measure `run(*args)` `repeat` times and keep the best try; failures are recorded."""
        tries = [self.once(replace(template), run, *args) for _ in range(self.repeat)]
        self.results.append(best(tries))

    def once(self, template: Result, run: Callable[..., Result], *args: Any) -> Result:
        try:
            result = run(*args)
        except Exception as exc:
            template.status, template.error = "failed", f"{type(exc).__name__}: {exc}"[:400]
            result = template
        figures = f"{result.jobs_per_s:,.0f} jobs/s"
        if result.p99_ms is not None:
            figures += f", p50 {result.p50_ms} ms, p99 {result.p99_ms} ms"
        where = f"{result.label()} c={result.concurrency} batch={result.batch}"
        elapsed = time.monotonic() - self.start
        line = f"[{elapsed:5.0f}s] {result.workload:<11} {where}: {figures} {result.status}"
        print(line + (f" ({result.error})" if result.error else ""), file=sys.stderr, flush=True)
        return result

    def run(self) -> None:
        size = self.size
        if "enqueue" in self.workloads:
            for s in self.systems:
                for batch in (1, workloads.BATCH) if s.batch else (1,):
                    jobs = size.enqueue_jobs * (BATCH_JOBS_FACTOR if batch > 1 else 1)
                    self.attempt(
                        Result("enqueue", s.name, batch=batch),
                        workloads.enqueue,
                        *(s, batch, jobs, size.enqueue_seconds),
                    )
                if s.pipeline:
                    self.attempt(
                        Result("enqueue", s.name, "pipeline"),
                        workloads.enqueue,
                        *(s, 1, size.enqueue_jobs * BATCH_JOBS_FACTOR, size.enqueue_seconds),
                        "pipeline",
                    )
                if s.threaded:
                    self.attempt(
                        Result("enqueue", s.name, workloads.THREADED),
                        workloads.enqueue,
                        *(s, 1, size.enqueue_jobs, size.enqueue_seconds),
                        workloads.THREADED,
                    )
        if "end_to_end" in self.workloads:
            for s in self.systems:
                for mode in s.modes:
                    for c in (c for c in size.concurrencies if c in mode.concurrencies):
                        self.attempt(
                            Result("end_to_end", s.name, mode.name, c),
                            workloads.end_to_end,
                            *(s, mode, c, size.end_to_end_jobs, size.timeout),
                        )
                if s.threaded:
                    for c in size.concurrencies:
                        self.attempt(
                            Result("end_to_end", s.name, workloads.fed_by(s.fast), c),
                            workloads.end_to_end,
                            *(s, s.mode(s.fast), c, size.end_to_end_jobs, size.timeout),
                            workloads.THREADS,
                        )
        if "latency" in self.workloads:
            for s in self.systems:
                self.attempt(
                    Result("latency", s.name, s.fast),
                    workloads.latency,
                    *(s, LATENCY_RATE, size.latency_seconds, size.timeout),
                )
        if "raw" in self.workloads:
            for kind in report.REFERENCE:
                self.attempt(Result("raw", "hopper", kind), scale.raw, kind, size.raw_jobs)
        if "depth" in self.workloads:
            self.attempt(Result("depth", "hopper"), scale.depth, size.depth_jobs)
        if "connections" in self.workloads:
            self.attempt(Result("connections", "hopper"), scale.connections, size.idle_connections)
        if "idle" in self.workloads:
            self.attempt(
                Result("idle", "hopper", concurrency=size.idle_queues),
                idle.measure,
                *(size.idle_queues, size.idle_seconds),
            )
        if "history" in self.workloads:
            self.attempt(Result("history", "hopper"), history.measure, size.history_jobs)


def best(tries: list[Result]) -> Result:
    """The try least disturbed by other work: lowest p99 latency, else highest rate."""
    measured = [r for r in tries if r.status != "failed"] or tries
    if measured[0].p99_ms is not None:
        return min(measured, key=lambda r: r.p99_ms or 0.0)
    return max(measured, key=lambda r: r.jobs_per_s)


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: servers are stopped


def main() -> None:
    cli = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    cli.add_argument("--quick", action="store_true", help="small job counts, c=1 and 10 (~2 min)")
    cli.add_argument(
        "--systems", help="comma-separated subset: " + ",".join(s.name for s in SYSTEMS)
    )
    cli.add_argument("--workloads", help="comma-separated subset: " + ",".join(WORKLOADS))
    cli.add_argument(
        "--repeat", type=int, default=1, help="run each measurement N times, keep the best"
    )
    cli.add_argument(
        "--reference",
        default=reference_binary(),
        help="a Faktory server binary: the raw loads also run on it, in the same run "
        "(default: $FAKTORY_BIN; without one, the raw table shows the recorded figures)",
    )
    args = cli.parse_args()
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 2,000 client sockets and more

    names = args.systems.split(",") if args.systems else [s.name for s in SYSTEMS]
    chosen = args.workloads.split(",") if args.workloads else list(WORKLOADS)
    size = QUICK if args.quick else FULL
    served = {"redis", "hopper", "reference"} if args.reference else {"redis", "hopper"}
    systems = [s for s in SYSTEMS if s.name in names and s.backend in served]
    os.environ[REFERENCE_BIN] = args.reference  # where the workloads look for it
    bench = Bench(size, systems, chosen, args.repeat)
    started = datetime.now(UTC)
    bench.run()
    duration = time.monotonic() - bench.start

    results = bench.results
    figures = report.summary(results)
    complete = not (args.quick or args.systems or args.workloads or args.repeat > 1)
    out = ROOT / "bench" / "results" / ("latest.json" if complete else "partial.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["python -m bench", *sys.argv[1:]]),
                "started": started.isoformat(timespec="seconds"),
                "duration_s": round(duration, 1),
                "machine": describe(),
                "size": asdict(size),
                "versions": {s.name: s.version for s in SYSTEMS},
                "summary": figures,
                "results": [asdict(r) for r in results],
            },
            indent=1,
        )
        + "\n"
    )
    tables = report.tables(results, size.concurrencies)
    if complete:
        chart.draw(results, size.concurrencies, ROOT / "docs" / "benchmarks.png")
        version = reference_version(args.reference) if args.reference else ""
        docs.write(
            ROOT / "docs" / "benchmarks.md", tables, asdict(size), duration, started, version
        )
    print(tables)
    print(f"\nresults: {out.relative_to(ROOT)}; {duration:.0f} s")
    print(report.summary_line(figures))


if __name__ == "__main__":
    main()
