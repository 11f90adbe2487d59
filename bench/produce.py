"""One producer process: push no-op jobs through a system's documented API, print the timing.

`python -m bench.produce SYSTEM --jobs N [--batch B] [--rate R] [--max-seconds S] [--threads T]
[--warmup]` prints one JSON line: {"pushed": n, "first": t, "last": t} (time.time() before the
first push and after the last). `--rate` paces single pushes (open loop: a late push does not
move the schedule); `--threads T` shares the jobs among T threads pushing through one pusher,
each waiting for its own replies (a web app's request threads); `--warmup` pushes one job the
harness waits for, to know the worker is up.
"""

import argparse
import asyncio
import importlib
import inspect
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Protocol

from bench.probe import WARMUP
from bench.systems import find


class Pusher(Protocol):
    def push(self, sent: float) -> None: ...

    def push_batch(self, sent: float, count: int) -> None: ...


class AsyncPusher(Protocol):
    async def push(self, sent: float) -> None: ...

    async def push_batch(self, sent: float, count: int) -> None: ...


@dataclass(frozen=True)
class Plan:
    jobs: int
    batch: int = 1
    rate: float = 0.0  # jobs/s; 0: as fast as possible
    max_seconds: float = 60.0
    pipeline: bool = False  # single pushes through the pusher's pipeline() (Hopper)
    threads: int = 1  # threads sharing one (sync) pusher, each with its share of the jobs


@dataclass(frozen=True)
class Timing:
    pushed: int
    first: float
    last: float


def delay(plan: Plan, first: float, pushed: int) -> float:
    """Seconds to wait before the next push to keep to the plan's rate."""
    return first + pushed / plan.rate - time.time() if plan.rate else 0.0


def drive(pusher: Pusher, plan: Plan) -> Timing:
    first = time.time()
    pushed = 0
    while pushed < plan.jobs and time.time() - first < plan.max_seconds:
        if (wait := delay(plan, first, pushed)) > 0:
            time.sleep(wait)
        count = min(plan.batch, plan.jobs - pushed)
        if plan.batch > 1:
            pusher.push_batch(time.time(), count)
        else:
            pusher.push(time.time())
        pushed += count
    return Timing(pushed, first, time.time())


async def adrive(pusher: AsyncPusher, plan: Plan) -> Timing:
    first = time.time()
    pushed = 0
    while pushed < plan.jobs and time.time() - first < plan.max_seconds:
        if (wait := delay(plan, first, pushed)) > 0:
            await asyncio.sleep(wait)
        count = min(plan.batch, plan.jobs - pushed)
        if plan.batch > 1:
            await pusher.push_batch(time.time(), count)
        else:
            await pusher.push(time.time())
        pushed += count
    return Timing(pushed, first, time.time())


def produce(system: str, plan: Plan, warmup: bool) -> Timing:
    module = importlib.import_module(find(system).module)
    if inspect.iscoroutinefunction(getattr(module, "apusher", None)):

        async def run() -> Timing:
            pusher = await module.apusher()
            if warmup:
                await pusher.push(WARMUP)
                return Timing(1, 0.0, 0.0)
            return await adrive(pusher, plan)

        return asyncio.run(run())
    pusher = module.pusher()
    if warmup:
        pusher.push(WARMUP)
        return Timing(1, 0.0, 0.0)
    if plan.pipeline:
        with pusher.pipeline() as piped:
            timing = drive(piped, plan)
        return Timing(timing.pushed, timing.first, time.time())  # all confirmed by now
    if plan.threads > 1:
        return drive_threads(pusher, plan)
    return drive(pusher, plan)


def drive_threads(pusher: Pusher, plan: Plan) -> Timing:
    """`plan.threads` threads share the jobs (and the rate), all through one pusher."""
    shares = [
        plan.jobs // plan.threads + (n < plan.jobs % plan.threads) for n in range(plan.threads)
    ]
    rate = plan.rate / plan.threads
    with ThreadPoolExecutor(plan.threads) as pool:
        runs = [pool.submit(drive, pusher, replace(plan, jobs=s, rate=rate)) for s in shares]
        timings = [run.result() for run in runs]
    first, last = min(t.first for t in timings), max(t.last for t in timings)
    return Timing(sum(t.pushed for t in timings), first, last)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cli.add_argument("system")
    cli.add_argument("--jobs", type=int, default=1)
    cli.add_argument("--batch", type=int, default=1)
    cli.add_argument("--rate", type=float, default=0.0)
    cli.add_argument("--max-seconds", type=float, default=60.0)
    cli.add_argument("--warmup", action="store_true")
    cli.add_argument("--pipeline", action="store_true", help="push through pusher.pipeline()")
    cli.add_argument("--threads", type=int, default=1, help="threads sharing one pusher")
    args = cli.parse_args()
    plan = Plan(args.jobs, args.batch, args.rate, args.max_seconds, args.pipeline, args.threads)
    timing = produce(args.system, plan, args.warmup)
    print(json.dumps(asdict(timing)), flush=True)


if __name__ == "__main__":
    main()
