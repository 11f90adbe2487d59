"""Speed of the bundled client against a broker of its own: enqueue rates and end-to-end drains.

    python -m bench.client_speed [--jobs N] [--concurrency 1,10,50] [--kinds sync,async]
                                 [--push push,pipeline,bulk100,bulk1000] [--repeat R]

starts `hopper run` (embedded Redis) on a free port, then measures no-op jobs: single
`push()` (N jobs), pipelined pushes (`Client.pipeline()`) and `push_bulk` of 100 and 1000
jobs a call (5 N each); then, per kind (sync or async functions) and concurrency, N jobs
pushed in bulks of 100 while ONE worker process drains them: first push to last job done.
Each figure is the best of R runs, with the CPU the worker, the broker and its Redis spent
per job. `--url` measures an already running broker instead (without its CPU).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hopper_client import Client, Worker, make_job

TICK = os.sysconf("SC_CLK_TCK")
BULK = 100  # jobs per push_bulk in the end-to-end runs (as bench/ does)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (user + system) of a process, and of its children still running."""
    times = []
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = Path(f"/proc/{current}/task").glob("*/children")
            children = " ".join(task.read_text() for task in tasks).split()
        except OSError:
            continue
        times.append((int(fields[11]) + int(fields[12])) / TICK)
        pids += [int(child) for child in children]
    return times[0], sum(times[1:])


@contextmanager
def broker() -> Iterator[tuple[str, int]]:
    """`hopper run` with an embedded Redis on a free port: (url, pid)."""
    with tempfile.TemporaryDirectory(prefix="client-speed-") as data:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        hopper = Path(sys.executable).parent / "hopper"
        argv = [str(hopper), "run", "--bind", f"127.0.0.1:{port}", "--data-dir", data]
        argv += ["--log-level", "WARNING"]
        process = subprocess.Popen(argv)
        url = f"tcp://127.0.0.1:{port}"
        try:
            with Client(url, retry_for=60) as client:
                client.info()
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(30)


def produce(url: str, how: str, jobs: int) -> float:
    """Push `jobs` no-op jobs the way `how` says; the seconds it took."""
    with Client(url) as client:
        started = time.perf_counter()
        if how == "push":
            for _ in range(jobs):
                client.push("noop")
        elif how == "pipeline":
            with client.pipeline() as pipe:
                for _ in range(jobs):
                    pipe.push("noop")
        else:
            size = int(how.removeprefix("bulk"))
            for first in range(0, jobs, size):
                count = min(size, jobs - first)
                client.push_bulk([make_job("noop") for _ in range(count)])
        seconds = time.perf_counter() - started
        client.flush()
    return seconds


def enqueue_rate(url: str, how: str, jobs: int) -> tuple[float, str]:
    return jobs / produce(url, how, jobs), ""


def work(url: str, kind: str, concurrency: int, jobs: int) -> None:
    """The worker process: prints its CPU time at the warm-up job, then the time the last job
    ended and its CPU time again, and terminates."""
    worker = Worker(url, concurrency=concurrency)
    done = 0

    def finished() -> None:
        nonlocal done
        done += 1
        if done == jobs:
            print(json.dumps({"last": time.time(), "cpu": time.process_time()}), flush=True)
            worker.terminate()

    def warm() -> None:
        print(json.dumps({"cpu": time.process_time()}), flush=True)

    if kind == "sync":
        worker.register("noop", finished)
    else:

        async def async_finished() -> None:
            finished()

        worker.register("noop", async_finished)
    worker.register("warm", warm)
    worker.run()


def drain(url: str, kind: str, concurrency: int, jobs: int) -> tuple[float, str]:
    """Jobs/s of one worker process draining `jobs` pushed in bulks while it runs, and the
    worker's CPU per job."""
    argv = [sys.executable, "-m", "bench.client_speed", "--url", url, "--worker"]
    argv += [f"{kind}:{concurrency}:{jobs}"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        with Client(url) as client:
            client.push("warm")
            ready = json.loads(process.stdout.readline())
            first = time.time()
            for start in range(0, jobs, BULK):
                count = min(BULK, jobs - start)
                client.push_bulk([make_job("noop") for _ in range(count)])
            pushed = time.time() - first
            end = json.loads(process.stdout.readline())
            process.wait(30)
            info = client.info()["faktory"]  # every job was ACKed
            assert info["sets"]["working"] == 0 and not info["queues"].get("default"), info
    finally:
        if process.poll() is None:
            process.kill()
    worker_cpu = 1e6 * (end["cpu"] - ready["cpu"]) / jobs
    notes = f"  (pushed in {pushed:.2f} s)  worker {worker_cpu:5.1f} µs/job"
    return float(jobs / (end["last"] - first)), notes


def measured(pid: int | None, jobs: int, run: Callable[..., tuple[float, str]], *args: Any) -> str:
    """`run(*args)`'s figure and notes, with the broker's CPU µs per job when its pid is known."""
    before = cpu_seconds(pid) if pid else (0.0, 0.0)
    figure, notes = run(*args)
    text = f"{figure:>9,.0f}/s{notes}"
    if pid:
        after = cpu_seconds(pid)
        broker, redis = (1e6 * (b - a) / jobs for a, b in zip(before, after, strict=True))
        text += f"  broker {broker:5.1f}  redis {redis:5.1f} µs/job"
    return text


def best(repeat: int, pid: int | None, jobs: int, run: Callable[..., Any], *args: Any) -> str:
    """The fastest of `repeat` measurements."""
    runs = [measured(pid, jobs, run, *args) for _ in range(repeat)]
    return max(runs, key=lambda text: float(text.split("/s")[0].replace(",", "")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--kinds", default="sync,async")
    parser.add_argument("--push", default="push,pipeline,bulk100,bulk1000")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (the best)")
    parser.add_argument("--url", help="a running broker (default: start one)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # kind:concurrency:jobs
    args = parser.parse_args()
    if args.worker:
        kind, concurrency, jobs = args.worker.split(":")
        return work(args.url, kind, int(concurrency), int(jobs))
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), flush=True)
    with broker() if args.url is None else _given(args.url) as (url, pid):
        for how in filter(None, args.push.split(",")):
            count = args.jobs * (1 if how == "push" else 5)
            rate = best(args.repeat, pid, count, enqueue_rate, url, how, count)
            print(f"enqueue {how:<9} {rate}", flush=True)
        for kind in filter(None, args.kinds.split(",")):
            for concurrency in map(int, filter(None, args.concurrency.split(","))):
                rate = best(args.repeat, pid, args.jobs, drain, url, kind, concurrency, args.jobs)
                print(f"end-to-end {kind:<5} c={concurrency:<3} {rate}", flush=True)


@contextmanager
def _given(url: str) -> Iterator[tuple[str, int | None]]:
    yield url, None


if __name__ == "__main__":
    main()
