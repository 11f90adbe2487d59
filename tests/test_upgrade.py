"""A data directory written by storage schema 1 (tests/data/v1-store, see its README) is
migrated when a broker starts on it: every job keeps its place, nothing is lost, once."""

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from hopper_broker.store.migrate import HOST, _gone
from tests.conftest import BrokerProcess, check_store, clean_env, free_port
from tests.wire import SyncWire

V1_STORE = Path(__file__).parent / "data" / "v1-store"
QUEUES = "default critical later one two flaky slow held"


def test_a_schema_1_data_directory_is_migrated(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(V1_STORE, data)
    broker = broker_process("--data-dir", str(data), embedded=True)
    log = broker.log.read_text()
    assert "migrating 9 queues from storage schema 1 to schema 2" in log
    assert "the job in two is now twice-0000-two" in log
    w = SyncWire(broker.port, hello={"wid": "after-upgrade"})

    info = json.loads(w.call("INFO"))["faktory"]
    assert info["sets"]["dead"] == 1 and info["sets"]["scheduled"] == 1
    assert info["total_processed"] >= 3 and info["total_failures"] >= 2
    assert w.call("FETCH", "held") is None  # still paused
    check_store(f"unix://{data / 'redis.sock'}")

    assert w.call("QUEUE", "RESUME held") == b"OK"
    for target in ("retries", "dead"):
        assert w.call("MUTATE", {"cmd": "requeue", "target": target}) == b"OK"
    fetched = []
    while payload := w.call("FETCH", QUEUES):
        job = json.loads(payload)
        fetched.append(job["jid"])
        assert w.call("ACK", {"jid": job["jid"]}) == b"OK"
    assert fetched[:4] == ["queued-default-0", "queued-default-1", "queued-default-2", "acked-000"]
    assert sorted(fetched) == sorted(
        [
            "queued-default-0",
            "queued-default-1",
            "queued-default-2",
            "acked-000",
            "queued-critical-0",
            "queued-critical-1",
            "queued-paused-0",
            "scheduled-soon-0",
            "retry-000",
            "dead-0000",
            "working-00",
            "twice-0000",
            "twice-0000-two",
        ]
    )
    w.close()
    assert broker.stop() == 0

    broker.start()  # the store is migrated once
    assert broker.log.read_text().count("migrating 9 queues") == 1
    w = SyncWire(broker.port, hello={})
    assert json.loads(w.call("INFO"))["faktory"]["sets"]["scheduled"] == 1  # the far one
    w.close()
    check_store(f"unix://{data / 'redis.sock'}")
    assert broker.stop() == 0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[[Path], redis.Redis]]:
    """Start redis-server processes (AOF in the given directory, as the embedded one); each is
    shut down (saving its AOF) at the end if still running."""
    started: list[subprocess.Popen[bytes]] = []

    def start(directory: Path) -> redis.Redis:
        directory.mkdir(parents=True, exist_ok=True)
        sock = directory / "own.sock"
        command = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--dir",
                   str(directory), "--appendonly", "yes", "--save", "", "--logfile",
                   str(directory / "own.log")]  # fmt: skip
        started.append(subprocess.Popen(command))
        db = redis.Redis(unix_socket_path=str(sock))
        for _ in range(500):
            try:
                if db.ping():
                    return db
            except redis.ConnectionError:
                time.sleep(0.01)
        raise RuntimeError("redis-server did not start")

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def run_broker(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopper_broker", "run", "--processes", "1", "--dashboard-bind",
         "off", "--bind", f"127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, timeout=timeout, env=clean_env(),
    )  # fmt: skip


def test_a_store_of_a_newer_hopper_is_refused_in_one_line(
    own_redis: Callable[[Path], redis.Redis], tmp_path: Path
) -> None:
    """docs/operations.md: what fails when starting exits with status 1 in one line; a store
    written by a newer schema must be refused clearly (not with a traceback)."""
    db = own_redis(tmp_path / "redis")
    db.set("hopper:g:{g}:schema", 3)
    sock = db.connection_pool.connection_kwargs["path"]
    done = run_broker("--redis-url", f"unix://{sock}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert "newer Hopper" in lines[0]


def test_a_migration_cut_short_finishes_at_the_next_start(
    own_redis: Callable[[Path], redis.Redis], tmp_path: Path
) -> None:
    """docs/storage.md: 'a broker killed mid-way finishes at its next start'. A broker
    SIGKILLed while migrating leaves its migration lock in the AOF (its lease runs 30 s); the
    next broker on this machine sees that process gone and takes over at once."""
    data = tmp_path / "data"
    shutil.copytree(V1_STORE, data)
    db = own_redis(data)  # the killed broker's redis-server, on the v1 store's AOF
    dead_pid = subprocess.Popen(["true"])
    dead_pid.wait()
    holder = f"{HOST} {dead_pid.pid} 0123456789abcdef"  # this machine and pid namespace
    db.set("hopper:g:{g}:migrating", holder, ex=30, nx=True)  # what the killed broker left
    db.shutdown()  # the next broker stops a leftover redis-server gently (AOF flushed)
    for _ in range(500):
        if not (data / "own.sock").exists():
            break
        time.sleep(0.01)
    broker = BrokerProcess(
        ["--processes", "1", "--dashboard-bind", "off", "--data-dir", str(data)], clean_env()
    )
    try:
        broker.start()  # RuntimeError when it does not listen within 20 s
        assert "migrating 9 queues from storage schema 1" in broker.log.read_text()
    finally:
        if broker.process is not None and broker.process.poll() is None:
            broker.kill()
        broker.stop_embedded_redis()


def test_a_lock_holder_is_gone_only_if_its_pid_is_free_in_this_namespace() -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()
    assert _gone(f"{HOST} {ended.pid} token")
    assert not _gone(f"{HOST} {os.getpid()} token")  # alive
    other = HOST.rsplit("/", 1)[0] + "/another-pid-namespace"  # a container on this host
    assert not _gone(f"{other} {ended.pid} token")
    assert not _gone("elsewhere/1 1 token")
