"""Test doctrine: real parts only.

- One real redis-server per test session (a unix socket in a temporary directory), flushed
  before each test that uses it. No fakeredis, no mocked Redis, no mocked sockets.
- Brokers listen on 127.0.0.1 port 0: in-process (`broker` fixture, an App in the test's
  nursery) or as a real process (`broker_process`, for crash tests and blocking clients).
- Every test runs under a cap (pytest-timeout, set in pyproject.toml); tests wait for events
  or for a state to appear with `eventually`, which is bounded, never a bare sleep.
- Every fault, fuzz and chaos test ends with `check_store`: `hopper check` must find the store
  sound.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import redis.cluster
import trio

from hopper_broker.app import App
from hopper_broker.config import Config
from hopper_broker.middleware import Chains
from hopper_broker.store.keys import QueueKeys
from tests.cluster_rig import ClusterRig, running

collect_ignore = ["sample_app"]  # an application's own test suite, run by test_client_testing.py


CLUSTER_GROUPS = 2  # pytest-xdist groups of the tests on the local Redis Cluster

Test = TypeVar("Test", bound=Callable[..., Any])


def on_rig(test: Test) -> Test:
    """Run a test on one Redis and on the cluster rig (its brokers, broker processes and `rdb`
    follow the mode): for one test of a module whose others do not touch the store."""
    marked: Test = pytest.mark.usefixtures("store_mode")(pytest.mark.on_cluster(test))
    return marked


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With several pytest-xdist workers (`make test`), the tests on the local Redis Cluster run
    in CLUSTER_GROUPS groups (by module), each in one worker, so that a few clusters are started
    (one per worker that runs a group), not one per worker and module, while the cluster runs
    are not all queued behind one worker."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            "redis_cluster" in getattr(item, "fixturenames", ())
            or params.get("store_mode") == "cluster"
        ):
            group = zlib.crc32(item.nodeid.split("::")[0].encode()) % CLUSTER_GROUPS
            item.add_marker(pytest.mark.xdist_group(f"redis_cluster_{group}"))


# the fixtures that follow the test's store mode (the brokers' ones ask for store_at)
MODE_FOLLOWERS = {"store_at", "rdb"}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that asks for `store_mode` runs each test as on one Redis and in split mode
    (the global keys written in a second step, as on a Redis Cluster); one marked
    `on_cluster` (the tests that do not depend on one Redis) on one Redis and on the cluster
    rig instead, where the store runs split too (`on_cluster(split=True)`: in all three). A
    test whose fixtures do not follow the mode (MODE_FOLLOWERS) runs once; a test may narrow
    its modes with its own indirect parametrisation."""
    if "store_mode" not in metafunc.fixturenames or any(
        "store_mode" in mark.args[0] for mark in metafunc.definition.iter_markers("parametrize")
    ):
        return
    if not MODE_FOLLOWERS.intersection(metafunc.fixturenames):
        return  # nothing of the test follows the mode: one run says it all
    modes = ["one", "split"]
    marker = metafunc.definition.get_closest_marker("on_cluster")
    if marker:
        modes = [*modes[: 1 + marker.kwargs.get("split", False)], "cluster"]
    metafunc.parametrize("store_mode", modes, indirect=True)


def _redis_ready(path: str) -> bool:
    try:
        return bool(redis.Redis(unix_socket_path=path).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real redis-server for the whole session; yields its unix:// URL."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed (run `make install`)"
    directory = tempfile.mkdtemp(prefix="hopper-test-redis-")
    sock = os.path.join(directory, "redis.sock")
    process = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", sock, "--dir", directory, "--save", "",
         "--appendonly", "no", "--logfile", os.path.join(directory, "redis.log")],
    )  # fmt: skip
    try:
        for _ in range(500):
            if _redis_ready(sock):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("redis-server did not start")
        yield f"unix://{sock}"
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterRig]:
    """A real Redis Cluster (3 masters, a replica each) for the session: tests/cluster_rig.py."""
    if not shutil.which("redis-cli"):
        pytest.skip("redis-cli is not installed (it makes the cluster)")
    with running(tmp_path_factory.mktemp("cluster")) as rig:
        yield rig


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, flushed for this test."""
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    return redis_server


class ClusterView(redis.cluster.RedisCluster):  # type: ignore[type-arg]
    """redis-py's cluster client, whose KEYS asks every master (not one of them)."""

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        return super().keys(pattern, target_nodes=self.PRIMARIES, **kwargs)


@pytest.fixture
def rdb(redis_url: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test Redis, for asserting stored state (on the cluster
    rig, redis-py's cluster client, which routes each command by its key)."""
    if _mode(request) == "cluster":
        rig: ClusterRig = request.getfixturevalue("redis_cluster")
        port = rig.masters()[0]
        cluster = ClusterView(host="127.0.0.1", port=port, decode_responses=True)
        yield cluster  # type: ignore[misc]
        cluster.close()
        return
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def live_jids(db: redis.Redis, queue: str = "default") -> set[str]:
    """The jids of the jobs a queue holds that have not finished (a finished job keeps its
    record, in the finished set, for finished_ttl)."""
    k = QueueKeys(queue)
    return {_text(j) for j in db.hkeys(k.jobs)} - {_text(j) for j in db.zrange(k.finished, 0, -1)}


def live_jobs(db: redis.Redis, queue: str = "default") -> int:
    """How many jobs a queue holds that have not finished."""
    k = QueueKeys(queue)
    return int(db.hlen(k.jobs)) - int(db.zcard(k.finished))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_config(redis_url: str, **overrides: Any) -> Config:
    """Settings for a broker under test: port 0, quick loops, the test Redis."""
    values: dict[str, Any] = {
        "bind": "127.0.0.1:0",
        "redis_url": redis_url,
        "fetch_timeout": 0.5,
        "scheduler_interval": 0.05,
        "reaper_interval": 0.05,
        "dead_purge_interval": 0.05,
        "worker_reaper_interval": 0.05,
        "shutdown_grace": 1.0,
        "dashboard_bind": "off",  # tests of the dashboard turn it on (port 0)
    }
    values.update(overrides)
    return Config(**values)


test_config.__test__ = False  # type: ignore[attr-defined]


class StartBroker:
    """Starts in-process brokers in the test's nursery: `await start(**config overrides)`; in
    split mode (redis_split) when the test runs with store_mode 'split'."""

    def __init__(self, nursery: trio.Nursery, redis_url: str, split: bool = False) -> None:
        self.nursery = nursery
        self.redis_url = redis_url
        self.split = split

    async def __call__(self, chains: Chains | None = None, **overrides: Any) -> App:
        overrides.setdefault("redis_split", self.split)
        app = App(test_config(self.redis_url, **overrides), chains=chains)
        await self.nursery.start(app.run)
        return app


@pytest.fixture
def store_mode(request: pytest.FixtureRequest) -> str:
    """How the brokers of a test store: as on one Redis ('one'), split as on a Redis Cluster
    on one Redis (the global keys written in a second step, docs/cluster.md: 'split'), or on
    the cluster rig ('cluster'). A module opts in with
    `pytestmark = pytest.mark.usefixtures("store_mode")` (see pytest_generate_tests)."""
    mode: str = getattr(request, "param", "one")
    return mode


def _mode(request: pytest.FixtureRequest) -> str:
    if "store_mode" not in request.fixturenames:
        return "one"
    mode: str = request.getfixturevalue("store_mode")
    return mode


@pytest.fixture
def store_at(redis_url: str, request: pytest.FixtureRequest) -> tuple[str, bool]:
    """Where the test's brokers store, and whether split (redis_split on one Redis): the test
    Redis, or the flushed cluster rig."""
    mode = _mode(request)
    if mode == "cluster":
        rig: ClusterRig = request.getfixturevalue("redis_cluster")
        rig.flush()
        return rig.url, False
    return redis_url, mode == "split"


@pytest.fixture
async def start_broker(nursery: trio.Nursery, store_at: tuple[str, bool]) -> StartBroker:
    return StartBroker(nursery, *store_at)


@pytest.fixture
def store_url(store_at: tuple[str, bool]) -> str:
    """The Redis URL of the test's brokers: the test Redis, or the cluster rig's."""
    return store_at[0]


@pytest.fixture
async def broker(start_broker: StartBroker) -> App:
    """One in-process broker on the test Redis."""
    return await start_broker()


async def eventually(check: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> Any:
    """Wait until `check()` returns something truthy (awaiting it if needed); bounded."""
    with trio.fail_after(timeout):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return result
            await trio.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 20
) -> None:
    """Return once a broker process listens on `port` (RuntimeError with its log if it exits
    or does not listen within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"broker exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"broker did not listen: {log.read_text()}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at its end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


class BrokerProcess:
    """`hopper run` as a real child process (python -m hopper_broker), restartable and killable."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.args = ["--bind", f"127.0.0.1:{self.port}", *args]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix="hopper-broker-", suffix=".log")[1])

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hopper_broker", "run", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_listening(self.port, self.process, self.log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def stop_embedded_redis(self) -> None:
        """Kill the redis-server a killed broker left behind in its --data-dir, if any."""
        if "--data-dir" not in self.args:
            return
        data_dir = self.args[self.args.index("--data-dir") + 1]
        try:
            pid = int((Path(data_dir) / "redis.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if data_dir.encode() in cmdline:
            os.kill(pid, signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"


def clean_env(**env: str) -> dict[str, str]:
    """This process's environment without Hopper/Faktory/Redis settings, plus `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HOPPER_", "FAKTORY_"))}
    environment.pop("REDIS_URL", None)
    environment.update(env)
    return environment


# what a broker killed between a split move's steps may leave, for `hopper check --repair`
# (docs/cluster.md, "The global keys"; tests/test_split.py kills at each step)
LEFT_BETWEEN_STEPS = {"history due entry missing", "index says live", "not due", "stale index"}


def check_store(redis_url: str, *, repair: bool = False) -> list[str]:
    """Run `hopper check` (the command an operator runs) on a store: it must find no problem,
    or with `repair` repair every one it finds; returns the kinds of those."""
    done = subprocess.run(
        [sys.executable, "-m", "hopper_broker", "check", "--json", "--redis-url", redis_url]
        + ["--repair"] * repair,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert repair or problems == [], done.stdout
    return sorted(problem["kind"] for problem in problems)


async def check_store_aside(redis_url: str) -> None:
    """check_store from a worker thread, so that a broker running in the test's own trio loop
    goes on meanwhile: a split move whose first step the test saw (a state read by JOB STATE)
    makes its second before `hopper check` reads, instead of waiting, frozen, for the check."""
    await trio.to_thread.run_sync(check_store, redis_url)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command line."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=hopper",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def broker_process(store_at: tuple[str, bool]) -> Iterator[Callable[..., BrokerProcess]]:
    """Factory of broker processes on the test Redis (or embedded, with --data-dir), in the
    test's store mode (the cluster rig's URL, or --redis-split); each one process
    (--processes 1: what it proves holds of one; test_multiprocess.py runs several)."""
    started: list[BrokerProcess] = []
    store = ["--redis-url", store_at[0]] + ["--redis-split"] * store_at[1]

    def make(*args: str, embedded: bool = False, **env: str) -> BrokerProcess:
        base = ["--processes", "1", "--dashboard-bind", "off"] + ([] if embedded else store)
        broker = BrokerProcess(
            [*base, "--scheduler-interval", "0.1", "--reaper-interval", "0.1", *args],
            clean_env(**env),
        )
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in started:
        if broker.process is not None and broker.process.poll() is None:
            broker.kill()
        broker.stop_embedded_redis()
