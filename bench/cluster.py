"""Capacity on a local Redis Cluster (docs/capacity.md): B broker processes over S shards.

`python -m bench.cluster [--jobs 20000] [--shards 1,2,3] [--brokers 1,2]`: for each S and B, a
fresh cluster of S masters (no replicas: one redis-server each, slots split evenly, made with
CLUSTER ADDSLOTSRANGE and MEET, as `redis-cli --cluster create` will not make one of fewer than
three), B `hopper run` on it, then bench/rawload.py's mixed load (5 pushers, 5 fetchers, one
command each in flight) spread over the brokers and over 12 queues (so over every shard).
Prints one JSON line per run: jobs/s and CPU µs per job of the brokers, of the master holding
the global keys ({g}), of the other masters, and of the load generator itself.
"""

import argparse
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis

from bench import rawload
from bench.servers import (
    cpu_seconds,
    redis_answers,
    running,
    scratch_dir,
    start_hopper,
    stop,
    wait_until,
)
from hopper_broker.store.keys import JIDS
from hopper_broker.store.slots import SLOTS, key_slot
from tests.cluster_rig import free_node_port

QUEUES = 12  # queues the load spreads over (rawload's q0..q11)
WARM_UP = 2_000  # jobs run before each measured run (connections, library, queues made)
CLUSTER_READY = 30.0  # seconds for a cluster to agree on its slots


@contextmanager
def cluster(workdir: Path, shards: int) -> Iterator[list[tuple[int, int]]]:
    """A cluster of `shards` masters on loopback: yields (port, pid) per master, in slot
    order (the first owns slot 0)."""
    with ExitStack() as stack:
        nodes: list[tuple[int, int]] = []
        for n in range(shards):
            port, folder = free_node_port(), workdir / f"node{n}"
            folder.mkdir(parents=True)
            argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--dir", str(folder), "--save", "", "--appendonly", "no"]  # fmt: skip
            process = stack.enter_context(running(argv, folder / "redis.log"))
            client = redis.Redis(port=port)
            wait_until(lambda c=client: redis_answers(c), process, folder / "redis.log")
            first, last = n * SLOTS // shards, (n + 1) * SLOTS // shards - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            if nodes:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", nodes[0][0])
            nodes.append((port, process.pid))
        deadline = time.monotonic() + CLUSTER_READY
        while not all(_ready(port, shards) for port, _ in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError(f"a cluster of {shards} did not agree in {CLUSTER_READY} s")
            time.sleep(0.1)
        yield nodes


def _ready(port: int, shards: int) -> bool:
    info = redis.Redis(port=port).execute_command("CLUSTER", "INFO").decode()
    return "cluster_state:ok" in info and f"cluster_known_nodes:{shards}" in info


def measure(shards: int, brokers: int, jobs: int) -> dict[str, float]:
    """One run: S shards, B brokers, the mixed load."""
    with scratch_dir() as workdir, cluster(workdir, shards) as nodes:
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port, _ in nodes)
        flags = ["--redis-url", url, "--processes", "1", "--dashboard-bind", "off"]
        started = [start_hopper(workdir / f"broker{b}", flags=flags) for b in range(brokers)]
        try:
            ports = [port for _, port in started]
            rawload.run(0, WARM_UP, 5, 5, 1, [], ports=ports, queues=QUEUES)
            home = next(i for i in range(shards) if key_slot(JIDS) < (i + 1) * SLOTS // shards)
            groups = {
                "broker": [process.pid for process, _ in started],
                "redis_g": [nodes[home][1]],
                "redis_other": [pid for i, (_, pid) in enumerate(nodes) if i != home],
            }
            before = {name: cpu_seconds(pids) for name, pids in groups.items()}
            found = rawload.run(0, jobs, 5, 5, 1, [], ports=ports, queues=QUEUES)
            used = {name: cpu_seconds(pids) - before[name] for name, pids in groups.items()}
        finally:
            for process, _ in started:
                stop(process)
    total = found["jobs"]
    return {
        "shards": shards,
        "brokers": brokers,
        "jobs_per_s": found["jobs_per_s"],
        **{f"{name}_us": round(cpu / total * 1e6, 1) for name, cpu in used.items()},
        "load_us": found["load_cpu_us_per_job"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--shards", default="1,2,3")
    parser.add_argument("--brokers", default="1,2")
    args = parser.parse_args()
    if subprocess.run(["redis-server", "--version"], capture_output=True).returncode:
        raise SystemExit("redis-server is not installed")
    for shards in (int(s) for s in args.shards.split(",")):
        for brokers in (int(b) for b in args.brokers.split(",")):
            print(json.dumps(measure(shards, brokers, args.jobs)), flush=True)


if __name__ == "__main__":
    main()
