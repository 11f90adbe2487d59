"""A/B runs of bench/rawload.py against brokers from two (or more) checkouts, alternating.

`python -m bench.ab --side base=/tmp/wt-base --side new=. --workload mixed --rounds 6`: per
round, each side in turn on fresh servers (a redis-server started as the embedded one is, and
`python -m hopper_broker run --processes 1` with that side's `broker/` and `client/` first on
the path); a warm-up load, then the measured one. Workloads: `push` (10 pushers), `mixed` (5
pushers, 5 fetchers), `fetch` (10 pushers first, then 10 fetchers measured alone), `lone` (1
pusher, 1 fetcher), `serial` (the jobs pushed first, then the PyPI `faktory` client's own
connection fetching and acknowledging one job at a time, as its Worker does). Prints one JSON
line per run (broker and Redis CPU µs per job from /proc/<pid>/stat, jobs/s, the load average
before it), then per side the median of its ratios to the first side's run of the same round:
the box's speed drifts, ratios within a round do not.
"""

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faktory._proto import Connection

from bench import rawload
from bench.servers import cpu_seconds, free_port, hopper_answers, redis_server, running, wait_until

WORKLOADS = {"push": (10, 0), "mixed": (5, 5), "fetch": (10, 10), "lone": (1, 1), "serial": (1, 1)}
WARM_UP = 2000  # jobs before each measured run
PACKAGES = {"hopper_broker": "broker", "hopper_client": "client"}


def shim(name: str, checkout: Path, root: Path) -> Path:
    """A directory that puts `checkout`'s packages first on the path, as their import names."""
    path = root / f"shim-{name}"
    path.mkdir()
    for package, folder in PACKAGES.items():
        (path / package).symlink_to((checkout / folder).resolve())
    return path


@contextmanager
def broker(path: Path, workdir: Path) -> Iterator[tuple[int, int, int]]:
    """A side's broker on its own fresh Redis: its port, pid and the Redis's pid."""
    with redis_server(workdir / "redis") as store:
        port, log = free_port(), workdir / "broker.log"
        flags = ["--processes", "1", "--bind", f"127.0.0.1:{port}", "--redis-url", store.url]
        quiet = ["--log-level", "WARNING", "--dashboard-bind", "off"]
        argv = [sys.executable, "-m", "hopper_broker", "run", *flags, *quiet]
        with running(argv, log, {"PYTHONPATH": str(path)}) as process:
            wait_until(functools.partial(hopper_answers, port), process, log)
            yield port, process.pid, store.pid


def measure(path: Path, workload: str, jobs: int) -> dict[str, Any]:
    """One run of one side on fresh servers."""
    pushers, fetchers = WORKLOADS[workload]
    with tempfile.TemporaryDirectory(prefix="ab-") as tmp, broker(path, Path(tmp)) as ids:
        port, pid, redis_pid = ids
        rawload.run(port, WARM_UP, pushers, fetchers, 1, [])
        if workload in ("fetch", "serial"):  # the jobs first, then the fetchers measured alone
            rawload.run(port, jobs, pushers, 0, 1, [])
            pushers = 0
        load = Path("/proc/loadavg").read_text().split()[0]
        before = cpu_seconds([pid]), cpu_seconds([redis_pid])
        if workload == "serial":
            result = serial_fetch_ack(port, jobs)
        else:
            result = rawload.run(port, jobs, pushers, fetchers, 1, [])
        after = cpu_seconds([pid]), cpu_seconds([redis_pid])
    done: int = result["jobs"]
    return {
        "jobs": done,
        "jobs_per_s": result["jobs_per_s"],
        "broker_us": round((after[0] - before[0]) / done * 1e6, 1),
        "redis_us": round((after[1] - before[1]) / done * 1e6, 1),
        "load": load,
        "at": time.strftime("%H:%M:%S"),
    }


def serial_fetch_ack(port: int, jobs: int) -> dict[str, Any]:
    """FETCH, then ACK, one job at a time on the PyPI faktory client's connection."""
    connection = Connection(f"tcp://127.0.0.1:{port}", worker_id=f"ab-serial-{port}")
    connection.connect(worker_id=True)
    began = time.perf_counter()
    for _ in range(jobs):
        job = connection.fetch([rawload.DEFAULT[0].decode()])
        if not job:
            raise RuntimeError("the queue ran dry")
        connection.reply("ACK", {"jid": job["jid"]})
        if (reply := next(connection.get_message())) != "OK":
            raise RuntimeError(f"ACK answered {reply}")
    seconds = time.perf_counter() - began
    connection.disconnect()
    return {"jobs": jobs, "jobs_per_s": round(jobs / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", action="append", required=True, help="NAME=CHECKOUT")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="mixed")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ab-shims-") as tmp:
        sides = {}
        for spec in args.side:
            name, _, checkout = spec.partition("=")
            sides[name] = shim(name, Path(checkout), Path(tmp))
        for round_ in range(args.rounds):
            for name, path in sides.items():
                try:
                    row = measure(path, args.workload, args.jobs)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    row = {"error": str(exc)}
                row = {"round": round_, "side": name, "workload": args.workload, **row}
                rows.append(row)
                print(json.dumps(row), flush=True)
    first = next(iter(sides))
    for name in sides:
        ratios: dict[str, list[float]] = {"jobs_per_s": [], "broker_us": [], "redis_us": []}
        for round_ in range(args.rounds):
            pair = [r for r in rows if r["round"] == round_ and "error" not in r]
            base = next((r for r in pair if r["side"] == first), None)
            own = next((r for r in pair if r["side"] == name), None)
            if base and own:
                for field, values in ratios.items():
                    values.append(own[field] / base[field])
        summary = {field: round(statistics.median(v), 3) for field, v in ratios.items() if v}
        print(json.dumps({"side": name, f"median ratio to {first}": summary}), flush=True)


if __name__ == "__main__":
    main()
