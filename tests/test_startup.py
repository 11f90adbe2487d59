"""Starting a broker: one broker per data directory (a lock that dies with its owner), signals
heard in every phase, and a start that cannot reach Redis ending with one clear line."""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from chaos.load import wait_for
from tests.conftest import BrokerProcess, free_port
from tests.wire import SyncWire


class Hopper:
    """`hopper run` as a child process, its stderr in a file; for starts expected to fail."""

    def __init__(self, stderr: Path, *args: str) -> None:
        self.stderr = stderr
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HOPPER_", "FAKTORY_"))}
        env.pop("REDIS_URL", None)
        with stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hopper_broker",
                    "run",
                    "--bind",
                    f"127.0.0.1:{free_port()}",
                    *args,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def lines(self) -> list[str]:
        return self.stderr.read_text().splitlines()

    def wait_for_line(self, text: str) -> None:
        """Wait (bounded) until a line containing `text` is on stderr."""
        wait_for(lambda: any(text in line for line in self.lines()), 10, repr(text))

    def exit_status(self, timeout: float) -> int:
        """Wait for the exit; no traceback may have been printed."""
        status = self.process.wait(timeout)
        assert "Traceback" not in self.stderr.read_text()
        return status


@pytest.fixture
def hopper(tmp_path: Path) -> Iterator[Callable[..., Hopper]]:
    """Factory of `hopper run` processes; any still running at the end are killed."""
    started: list[Hopper] = []

    def start(*args: str) -> Hopper:
        started.append(Hopper(tmp_path / f"hopper-{len(started)}.err", *args))
        return started[-1]

    yield start
    for broker in started:
        if broker.process.poll() is None:
            broker.process.kill()
            broker.process.wait(10)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def round_trip(port: int, jid: str) -> None:
    """A PUSH and a FETCH of the same job through the broker."""
    conn = SyncWire(port, hello={"wid": "w1"})
    try:
        assert conn.call("PUSH", {"jid": jid, "jobtype": "x", "args": []}) == b"OK"
        assert json.loads(conn.call("FETCH", "default"))["jid"] == jid
        assert conn.call("ACK", {"jid": jid}) == b"OK"
    finally:
        conn.close()


# -- the data directory's lock ------------------------------------------------------------------


def test_one_broker_per_data_dir_and_the_lock_dies_with_it(
    broker_process: Callable[..., BrokerProcess], hopper: Callable[..., Hopper], tmp_path: Path
) -> None:
    data = (tmp_path / "data").resolve()
    first = broker_process("--data-dir", str(data), embedded=True)
    assert first.process is not None
    lock = data / "hopper.lock"
    assert lock.read_text() == f"{first.process.pid}\n"
    redis_pid = int((data / "redis.pid").read_text())
    redis_fds = Path(f"/proc/{redis_pid}/fd").iterdir()
    assert lock not in {Path(os.readlink(fd)) for fd in redis_fds}  # not inherited

    second = hopper("--data-dir", str(data))
    assert second.exit_status(15) != 0
    assert second.lines() == [
        f"hopper: data directory {data} is in use by broker pid {first.process.pid}"
    ]
    assert alive(redis_pid) and int((data / "redis.pid").read_text()) == redis_pid
    round_trip(first.port, "after-refusal")
    conn = SyncWire(first.port)
    stored = [{"jid": f"stored-{n}", "jobtype": "x", "args": [n]} for n in range(5)]
    assert json.loads(conn.call("PUSHB", stored)) == {}
    conn.close()

    first.kill()  # SIGKILL: its redis-server lives on, its lock goes with it
    assert alive(redis_pid)
    third = broker_process("--data-dir", str(data), embedded=True)
    assert third.process is not None and lock.read_text() == f"{third.process.pid}\n"
    assert f"stopping leftover redis-server pid {redis_pid}" in third.log.read_text()
    assert not alive(redis_pid)
    conn = SyncWire(third.port, hello={"wid": "w2"})
    fetched = [json.loads(conn.call("FETCH", "default"))["jid"] for _ in stored]
    assert fetched == [job["jid"] for job in stored]
    conn.close()


def test_a_pid_file_naming_another_process_stops_nothing(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    """The pidfile's process only looks like this data dir's redis-server (its command line
    mentions both): it is left alone."""
    data = (tmp_path / "data").resolve()
    data.mkdir()
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "redis-server", f"{data}/redis.sock"]
    )
    try:
        (data / "redis.pid").write_text(f"{decoy.pid}\n")
        broker = broker_process("--data-dir", str(data), embedded=True)
        assert decoy.poll() is None
        round_trip(broker.port, "beside-decoy")
    finally:
        decoy.kill()
        decoy.wait(10)


@pytest.fixture
def foreign_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server on `<tmp_path>/data/redis.sock` that no broker started (no pidfile)."""
    data = (tmp_path / "data").resolve()
    data.mkdir()
    sock = data / "redis.sock"
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket", str(sock),
         "--dir", str(tmp_path), "--save", "", "--appendonly", "no", "--logfile", "foreign.log"],
    )  # fmt: skip
    try:
        wait_for(lambda: _pings(redis.Redis(unix_socket_path=str(sock))), 10, "foreign redis")
        yield data
    finally:
        process.terminate()
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def test_a_redis_on_the_socket_that_is_not_ours_is_refused(
    foreign_redis: Path, hopper: Callable[..., Hopper]
) -> None:
    broker = hopper("--data-dir", str(foreign_redis))
    assert broker.exit_status(15) != 0
    assert broker.lines() == [
        f"hopper: {foreign_redis}/redis.sock is served by a process not known as this data "
        "directory's redis-server; stop it, then start again"
    ]
    assert _pings(redis.Redis(unix_socket_path=str(foreign_redis / "redis.sock")))


# -- signals in every phase; the start deadline -------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_a_broker_waiting_for_redis(
    hopper: Callable[..., Hopper], signum: int
) -> None:
    broker = hopper("--redis-url", f"redis://127.0.0.1:{free_port()}")
    broker.wait_for_line("unreachable")
    broker.process.send_signal(signum)
    assert broker.exit_status(5) == 0


@pytest.fixture
def silent_redis_server(tmp_path: Path) -> Callable[[], int]:
    """A `--redis-server` that starts and never answers; returns a function giving its pid once
    it runs."""
    pidfile = tmp_path / "silent.pid"
    script = tmp_path / "silent-redis-server"
    script.write_text(
        f"#!/bin/sh\necho $$ > {pidfile}.new\nmv {pidfile}.new {pidfile}\nexec sleep 60\n"
    )
    script.chmod(0o755)

    def pid() -> int:
        wait_for(pidfile.exists, 10, "the silent redis-server started")
        return int(pidfile.read_text())

    return pid


def test_a_signal_stops_a_broker_whose_redis_server_is_starting(
    hopper: Callable[..., Hopper], silent_redis_server: Callable[[], int], tmp_path: Path
) -> None:
    binary = str(tmp_path / "silent-redis-server")
    broker = hopper("--data-dir", str(tmp_path / "data"), "--redis-server", binary)
    pid = silent_redis_server()
    broker.process.send_signal(signal.SIGTERM)
    assert broker.exit_status(5) == 0
    assert not alive(pid)


def test_an_embedded_redis_server_that_never_answers_ends_the_start(
    hopper: Callable[..., Hopper], silent_redis_server: Callable[[], int], tmp_path: Path
) -> None:
    data = (tmp_path / "data").resolve()
    binary = str(tmp_path / "silent-redis-server")
    broker = hopper("--data-dir", str(data), "--redis-server", binary, "--redis-start-timeout", "1")
    pid = silent_redis_server()
    assert broker.exit_status(10) != 0
    assert broker.lines()[-1] == (
        f"hopper: redis-server did not answer within 1s; see {data}/redis.log"
    )
    assert not alive(pid)


def test_an_unreachable_redis_ends_the_start(hopper: Callable[..., Hopper]) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    broker = hopper("--redis-url", url, "--redis-start-timeout", "1")
    assert broker.exit_status(10) != 0
    last = broker.lines()[-1]
    assert last.startswith(f"hopper: cannot reach redis at {url} within 1s: "), last


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[Path]:
    """A real redis-server requiring the password `right-password`; yields its socket."""
    sock = tmp_path / "auth.sock"
    process = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", "0", "--unixsocket", str(sock),
         "--requirepass", "right-password", "--dir", str(tmp_path), "--save", "",
         "--appendonly", "no", "--logfile", "auth.log"],
    )  # fmt: skip
    try:
        client = redis.Redis(unix_socket_path=str(sock), password="right-password")
        wait_for(lambda: _pings(client), 10, "redis with a password")
        yield sock
    finally:
        process.terminate()
        process.wait(10)


def test_a_wrong_redis_password_ends_the_start(
    hopper: Callable[..., Hopper], redis_with_password: Path
) -> None:
    url = f"unix://:not-the-password@{redis_with_password}"
    broker = hopper("--redis-url", url, "--redis-start-timeout", "1")
    assert broker.exit_status(10) != 0
    last = broker.lines()[-1]
    assert last.startswith(f"hopper: cannot reach redis at unix://:***@{redis_with_password}")
    assert "WRONGPASS" in last
    assert "not-the-password" not in broker.stderr.read_text()
