"""A real local Redis Cluster for tests: six redis-server processes (three masters, a replica
each) on free loopback ports, made with `redis-cli --cluster create`. Helpers kill a master and
wait for its replica's promotion, restart the killed node as a replica, and move a slot between
masters with its keys, or half of it (so a test meets ASK). Every wait is bounded."""

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

NODES = 6
NODE_TIMEOUT_MS = 1000  # cluster-node-timeout: a silent master is failed over after about this
WAIT = 30.0  # seconds any rig step may take
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000
# node ports, below the usual ephemeral ports (32768-60999) and so are their bus ports: no
# client socket of a test takes one between its choice and its node's start (or restart)
NODE_PORTS = range(20_000, 22_768)
STARTS = 3  # attempts at starting a rig (another rig of a parallel worker may take a port)


def free_node_port(taken: list[int]) -> int:
    """A free loopback port of NODE_PORTS, not in `taken`, whose cluster bus port is free too."""
    for _ in range(200):
        port = random.choice(NODE_PORTS)
        if port in taken:
            continue
        try:
            for candidate in (port, port + BUS_OFFSET):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll `check()` until it returns something truthy; RuntimeError naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if result := check():
                return result
        time.sleep(0.05)
    raise RuntimeError(f"cluster rig: {what} within {timeout:g}s")


class ClusterRig:
    """Six redis-server processes in `directory`, one folder each, made one cluster."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.binary = shutil.which("redis-server") or "redis-server"
        ports: list[int] = []
        for _ in range(NODES):
            ports.append(free_node_port(ports))
        self.ports = sorted(ports)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._clients: dict[int, redis.Redis] = {}

    @property
    def url(self) -> str:
        """The cluster's redis+cluster:// URL, naming two seeds."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:2])

    def client(self, port: int) -> "redis.Redis[bytes]":
        """A plain redis-py connection to one node (no cluster logic: asks that node)."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(port=port, socket_timeout=5)
        return self._clients[port]

    def start(self) -> None:
        for port in self.ports:
            self._launch(port)
        for port in self.ports:
            wait_for(self.client(port).ping, f"node {port} answering")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=WAIT,
        )  # fmt: skip
        self.wait_ok()
        wait_for(self.replicated, "every master replicated")

    def replicated(self) -> bool:
        """Whether every master has a replica it knows of, and every replica is in sync."""
        for port in self.live():
            info = self.client(port).info("replication")
            if info["role"] == "master" and not self.replicas(port):
                return False
            if info["role"] == "slave" and info["master_link_status"] != "up":
                return False
        return True

    def replicas(self, port: int) -> list[int]:
        """The ports of a master's replicas, as the master knows them."""
        found = self.client(port).execute_command("CLUSTER", "REPLICAS", self.node_id(port))
        return [int(line.decode().split()[1].split("@")[0].rsplit(":", 1)[1]) for line in found]

    def _launch(self, port: int) -> None:
        folder = self.directory / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--appendonly", "no",
             "--save", "", "--logfile", str(folder / "redis.log")],
        )  # fmt: skip

    def stop(self) -> None:
        """Kill every node and wait for each: no process left."""
        for client in self._clients.values():
            client.close()
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait(WAIT)

    def live(self) -> list[int]:
        return [p for p in self.ports if self.processes[p].poll() is None]

    def node_id(self, port: int) -> str:
        return str(self.client(port).execute_command("CLUSTER", "MYID").decode())

    def slot_map(self, port: int) -> list[tuple[int, int, int]]:
        """One node's view: (first slot, last slot, master's port), sorted."""
        found = self.client(port).execute_command("CLUSTER", "SLOTS")
        return sorted((int(r[0]), int(r[1]), int(r[2][1])) for r in found)

    def agreed(self) -> list[tuple[int, int, int]] | None:
        """The slot map when every live node is ok and they all agree on it, else None."""
        maps = []
        for port in self.live():
            info = self.client(port).execute_command("CLUSTER", "INFO").decode()
            if "cluster_state:ok" not in info:
                return None
            maps.append(self.slot_map(port))
        if any(m != maps[0] for m in maps) or sum(b - a + 1 for a, b, _ in maps[0]) != 16384:
            return None
        return maps[0]

    def wait_ok(self) -> list[tuple[int, int, int]]:
        """Wait until every live node says cluster_state:ok and all agree on the slots."""
        found: list[tuple[int, int, int]] = wait_for(self.agreed, "cluster ok and agreed")
        return found

    def masters(self) -> list[int]:
        return sorted({port for _, _, port in self.wait_ok()})

    def owner(self, slot: int) -> int:
        """The port of the master that owns a slot."""
        return next(port for a, b, port in self.wait_ok() if a <= slot <= b)

    def keyslot(self, key: str | bytes) -> int:
        return int(self.client(self.ports[0]).execute_command("CLUSTER", "KEYSLOT", key))

    def flush(self) -> None:
        for port in self.masters():
            self.client(port).flushall()

    def kill(self, port: int) -> int:
        """SIGKILL a master; returns the port of its replica (promoted later: `promoted`)."""
        (replica, *_) = self.replicas(port)
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(WAIT)
        self._clients.pop(port).close()
        return replica

    def promoted(self, replica: int) -> None:
        """Wait until `replica` is a master and the cluster is ok again."""
        wait_for(lambda: replica in self.masters(), f"replica {replica} promoted")

    def restart_as_replica(self, port: int) -> None:
        """Start a killed node again (its nodes.conf kept): it rejoins as a replica of the
        master that took its slots; waits until it replicates."""
        self._launch(port)

        wait_for(lambda: self.client(port).info("replication")["role"] == "slave",
                 f"node {port} a replica")  # fmt: skip
        wait_for(self.replicated, "every master replicated")
        self.wait_ok()

    def move_slot(self, slot: int, target: int, *, keys: int | None = None) -> None:
        """Move a slot to the master `target` with its keys. With `keys`, stop half-way: the
        slot is MIGRATING on its owner and IMPORTING on the target and only that many of its
        keys moved (commands on a moved key get ASK); `finish_move` completes it."""
        source = self.owner(slot)
        src, dst = self.client(source), self.client(target)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))
        self._migrate(source, target, slot, keys)
        if keys is None:
            self.finish_move(slot, target)

    def finish_move(self, slot: int, target: int) -> None:
        """Move a half-moved slot's remaining keys and give the slot to `target` everywhere."""
        source = self.owner(slot)
        self._migrate(source, target, slot, None)
        for port in dict.fromkeys((target, source, *self.masters())):
            self.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE",
                                              self.node_id(target))  # fmt: skip
        wait_for(lambda: self.agreed() and self.owner(slot) == target, f"slot {slot} moved")

    def _migrate(self, source: int, target: int, slot: int, count: int | None) -> None:
        src = self.client(source)
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, count or 100_000)
        if keys:
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)


@contextlib.contextmanager
def running(directory: Path) -> Iterator[ClusterRig]:
    """A started rig, torn down (every process killed and waited for) on leaving; started
    again on other ports if a start fails (STARTS attempts)."""
    for attempt in range(1, STARTS + 1):
        rig = ClusterRig(directory / f"start-{attempt}")
        try:
            rig.start()
        except (RuntimeError, subprocess.SubprocessError):
            rig.stop()
            if attempt == STARTS:
                raise
            continue
        try:
            yield rig
        finally:
            rig.stop()
        return
