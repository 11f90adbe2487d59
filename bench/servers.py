"""Processes the harness owns: fresh redis-servers, Hopper brokers, workers; /proc readers.

Every process is started in its own session (so its whole process group can be signalled)
and stopped in a `finally`: SIGTERM, a wait, then SIGKILL to the group.
"""

import functools
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import redis

from hopper_broker.redis_server import EmbeddedRedis

Popen = subprocess.Popen[bytes]

ROOT = Path(__file__).resolve().parent.parent
HOPPER = ROOT / ".venv" / "bin" / "hopper"  # the broker as `make run` installs it
START_TIMEOUT = 15.0  # seconds for a server to accept connections
STOP_TIMEOUT = 10.0  # seconds for a process group to exit after SIGTERM
START_ATTEMPTS = 3  # tries to start a broker
REFERENCE_BIN = "FAKTORY_BIN"  # the environment variable naming the reference server's binary


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Popen:
    """Start `argv` in a new session, stdout and stderr to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )


def stop(process: Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process, wait, then SIGKILL its whole process group (children included)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def running(
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = STOP_TIMEOUT,
) -> Iterator[Popen]:
    """A process that is stopped (with its group) on leaving the block."""
    process = spawn(argv, log, env)
    try:
        yield process
    finally:
        stop(process, timeout)


def wait_until(ready: Callable[[], bool], process: Popen, log: Path) -> None:
    """Poll `ready()` until true; fail if the process exits or START_TIMEOUT passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"{log.stem} exited with {process.returncode}: {tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{log.stem} did not start in {START_TIMEOUT} s: {tail(log)}")
        time.sleep(0.02)


def tail(log: Path, lines: int = 5) -> str:
    """The last lines of a log, on one line."""
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


def redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, OSError):
        return False


def hopper_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(64).startswith(b"+HI")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A fresh redis-server with the embedded one's settings (unix socket, AOF everysec)."""

    url: str
    pid: int
    client: redis.Redis

    def memory_mb(self) -> float:
        """`used_memory` from INFO memory, in MB."""
        memory = cast(dict[str, Any], self.client.info("memory"))
        return int(memory["used_memory"]) / 1e6


@dataclass
class HopperServer:
    """A Hopper broker on 127.0.0.1 with its embedded redis-server."""

    port: int
    pid: int
    redis: RedisServer

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


@contextmanager
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    """Start a redis-server in `workdir` exactly as Hopper's embedded one is started."""
    embedded = EmbeddedRedis(str(workdir))
    workdir.mkdir(parents=True, exist_ok=True)
    with running(embedded.command(), workdir / "redis.stdout") as process:
        client = redis.Redis(unix_socket_path=str(embedded.socket))
        try:
            wait_until(lambda: redis_answers(client), process, workdir / "redis.stdout")
            yield RedisServer(embedded.url, process.pid, client)
        finally:
            client.close()


def start_hopper(
    workdir: Path, attempts: int = START_ATTEMPTS, flags: Sequence[str] = ()
) -> tuple[Popen, int]:
    """`hopper run` on a free loopback port (with more `flags`); tried again on a new port if it
    exits at start (another process may take the port between free_port() and the bind)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log, port = workdir / "hopper.log", free_port()
    argv = [str(HOPPER), "run", "--bind", f"127.0.0.1:{port}", "--data-dir", str(workdir)]
    process = spawn([*argv, "--log-level", "WARNING", *flags], log)
    try:
        wait_until(functools.partial(hopper_answers, port), process, log)
    except RuntimeError:
        stop(process)
        if attempts <= 1:
            raise
        return start_hopper(workdir, attempts - 1, flags)
    return process, port


@contextmanager
def hopper_server(workdir: Path, flags: Sequence[str] = ()) -> Iterator[HopperServer]:
    """A Hopper broker with its embedded Redis in `workdir` (and more `flags`), stopped on
    leaving the block."""
    process, port = start_hopper(workdir, flags=flags)
    client = redis.Redis(unix_socket_path=str(workdir / "redis.sock"))
    try:
        redis_pid = int((workdir / "redis.pid").read_text())
        url = f"unix://{workdir / 'redis.sock'}"
        yield HopperServer(port, process.pid, RedisServer(url, redis_pid, client))
    finally:
        client.close()
        stop(process, STOP_TIMEOUT + 5)


@dataclass
class ReferenceServer:
    """The reference Faktory server (Go) with the redis-server it starts itself."""

    port: int
    pid: int
    redis_pid: int


@contextmanager
def reference_server(workdir: Path, binary: str) -> Iterator[ReferenceServer]:
    """The Faktory binary `binary` on a free loopback port, its data in `workdir` (it starts
    its own redis-server there, on a unix socket), stopped on leaving the block."""
    port, web, log = free_port(), free_port(), workdir / "faktory.log"
    (workdir / "conf").mkdir()
    argv = [binary, "-b", f"127.0.0.1:{port}", "-w", f"127.0.0.1:{web}", "-e", "development"]
    argv += ["-d", str(workdir / "data"), "-c", str(workdir / "conf"), "-l", "warn"]
    with running(argv, log) as process:
        wait_until(functools.partial(hopper_answers, port), process, log)
        yield ReferenceServer(port, process.pid, child_pids(process.pid)[0])


def reference_binary() -> str:
    """The reference Faktory server's binary this run uses, "" for none."""
    return os.environ.get(REFERENCE_BIN, "")


def reference_version(binary: str) -> str:
    """What the reference binary says it is ("Faktory 1.8.0")."""
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started (from /proc), oldest first."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append((int(fields[19]), int(stat.parent.name)))
    return [child for _, child in sorted(found)]


@contextmanager
def scratch_dir(root: Path | None = None) -> Iterator[Path]:
    """A temporary directory for one server's data, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="hopper-bench-", dir=root) as path:
        yield Path(path)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of the processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
