"""Every system the harness runs: how to start its worker in each mode, where its producer is.

A system's `module` holds its no-op job, the app object its worker CLI loads, and `pusher()`
(or `async apusher()`) for bench.produce. Worker command lines are templates: `{py}` is the
bench interpreter, `{bin}` its scripts folder, `{c}` the concurrency, `{half}` half of it,
`{redis}` the Redis URL. Every worker also gets BENCH_CONCURRENCY, BENCH_REDIS_URL (peers),
HOPPER_URL and FAKTORY_URL (Hopper) and BENCH_PROBE in its environment.
"""

import sys
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

CONCURRENCIES = (1, 10, 50)
LATENCY_CONCURRENCY = 10  # worker concurrency of the latency probe (or the mode's highest below)


@dataclass(frozen=True)
class Mode:
    """One way to run a system's worker process."""

    name: str
    worker: str  # command line template
    concurrencies: tuple[int, ...] = CONCURRENCIES
    jobs_scale: float = 1.0  # fraction of the usual job count (for very slow modes)
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, concurrency: int, redis_url: str) -> list[str]:
        values = {
            "py": sys.executable,
            "bin": str(Path(sys.executable).parent),
            "c": str(concurrency),
            "half": str(max(1, concurrency // 2)),
            "redis": redis_url,
        }
        return [part.format(**values) for part in self.worker.split()]


@dataclass(frozen=True)
class System:
    """A job system as a Python team would run it."""

    name: str
    package: str  # PyPI distribution, for its version
    module: str
    backend: Literal["redis", "hopper", "reference"]  # reference: the Go Faktory (--reference)
    batch: bool  # has a documented API that enqueues many jobs in one call
    modes: tuple[Mode, ...]
    fast: str  # the mode the latency probe uses
    peer: bool = True  # False: Hopper itself, through some client
    pipeline: bool = False  # its pusher has pipeline(): single pushes without waiting
    threaded: bool = False  # measured pushing from 10 threads that each wait (a web app's shape)

    @property
    def version(self) -> str:
        return metadata.version(self.package)

    def mode(self, name: str) -> Mode:
        return next(m for m in self.modes if m.name == name)


HOPPER_WORKER = "{bin}/hopper-worker -c {c} --log-level WARNING bench.bundled_client:"
CPU_BOUND: dict[str, Any] = {  # each job spins 5 ms of CPU (bench/bundled_client.py)
    "concurrencies": (10,),
    "jobs_scale": 0.05,
    "env": {"BENCH_SPIN_MS": "5"},
}
HOPPER_WORKER_2 = (  # a process worker: a supervisor and 2 worker processes of c/2 slots
    "{bin}/hopper-worker --processes 2 -c {half} --log-level WARNING bench.bundled_client:"
)
HUEY = "{py} -m huey.bin.huey_consumer bench.peers.huey.huey -q -k thread -w {c}"
DRAMATIQ = "{py} -m dramatiq bench.peers.dramatiq --processes 1 --threads {c}"
DRAMATIQ_2 = "{py} -m dramatiq bench.peers.dramatiq --processes 2 --threads {half}"
RQ = "{bin}/rq worker -u {redis} --logging_level WARNING"
ARQ = "{bin}/arq bench.peers.arq.WorkerSettings --custom-log-dict bench.peers.arq.LOGGING"
FAKTORY_PY = System(  # the PyPI faktory client and its Worker, against Hopper
    "faktory-py",
    "faktory",
    "bench.hopper_faktory",
    "hopper",
    batch=False,
    modes=(
        Mode("processes", "{py} -m bench.hopper_faktory processes", jobs_scale=0.5),
        Mode("threads", "{py} -m bench.hopper_faktory threads"),
    ),
    fast="threads",
    peer=False,
)

SYSTEMS = (
    System(
        "hopper",
        "hopper-broker",
        "bench.bundled_client",
        "hopper",
        batch=True,
        modes=(
            Mode("threads", HOPPER_WORKER + "sync_worker"),
            Mode("async", HOPPER_WORKER + "async_worker"),
            Mode("2 processes", HOPPER_WORKER_2 + "sync_worker", concurrencies=(10, 50)),
            Mode("threads, 5 ms CPU jobs", HOPPER_WORKER + "sync_worker", **CPU_BOUND),
            Mode("2 processes, 5 ms CPU jobs", HOPPER_WORKER_2 + "sync_worker", **CPU_BOUND),
        ),
        fast="async",
        pipeline=True,
        threaded=True,
        peer=False,
    ),
    FAKTORY_PY,
    # the same client and worker against the reference server, when one is given
    replace(FAKTORY_PY, name="faktory-py-ref", backend="reference", modes=FAKTORY_PY.modes[1:]),
    System(
        "huey",
        "huey",
        "bench.peers.huey",
        "redis",
        batch=False,
        modes=(Mode("threads", HUEY),),
        fast="threads",
    ),
    System(
        "dramatiq",
        "dramatiq",
        "bench.peers.dramatiq",
        "redis",
        batch=False,
        modes=(
            Mode("threads", DRAMATIQ),
            Mode("2 processes", DRAMATIQ_2, concurrencies=(10, 50)),
        ),
        fast="threads",
    ),
    System(
        "rq",
        "rq",
        "bench.peers.rq",
        "redis",
        batch=True,
        modes=(
            Mode("Worker (fork)", RQ, concurrencies=(1,), jobs_scale=0.05),
            Mode(
                "SimpleWorker",
                RQ + " -w rq.worker.SimpleWorker",
                concurrencies=(1,),
                jobs_scale=0.5,
            ),
        ),
        fast="SimpleWorker",
    ),
    System(
        "saq",
        "saq",
        "bench.peers.saq",
        "redis",
        batch=False,
        modes=(Mode("asyncio", "{bin}/saq bench.peers.saq.settings --quiet"),),
        fast="asyncio",
    ),
    System(
        "arq",
        "arq",
        "bench.peers.arq",
        "redis",
        batch=False,
        modes=(
            Mode("default", ARQ),
            Mode("poll_delay=0.01", ARQ, env={"BENCH_ARQ_POLL_DELAY": "0.01"}),
        ),
        fast="poll_delay=0.01",
    ),
)


def find(name: str) -> System:
    return next(s for s in SYSTEMS if s.name == name)
