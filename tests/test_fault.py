"""Faults inflicted on real processes under load: the broker, a worker and Redis are killed with
SIGKILL, and several brokers reap one Redis. No acknowledged job may be lost; a job may run
twice only if its push or ACK was in flight at a kill.

Each test has a quick form (in `make test`) and a long one marked `chaos` (in `make chaos`).
"""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from chaos.conn import Conn
from chaos.figures import record
from chaos.load import RETRY_BACKOFF, Ledger, Producer, Worker, read_log, wait_for
from chaos.marks import CHAOS
from hopper_broker.app import relay
from hopper_broker.doorbell import Doorbell
from hopper_broker.store import keys
from hopper_broker.store.address import Address
from hopper_broker.store.keys import QueueKeys
from tests.conftest import BrokerProcess, check_store, live_jobs
from tests.wire import WireError

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "chaos"
FAST_ARGS = ("--min-reservation", "1", "--fetch-timeout", "0.5")


def stored_jobs(db: redis.Redis, queue: str = QUEUE) -> set[str]:
    return set(db.hkeys(QueueKeys(queue).jobs))


def left_in_redis(db: redis.Redis, queue: str = QUEUE) -> dict[str, int]:
    k = QueueKeys(queue)
    return {
        "jobs": live_jobs(db, queue),
        "queue": db.llen(k.queue),
        "working": db.zcard(k.working),
        "retries": db.zcard(k.retries),
    }


def requeue_retries(port: int) -> None:
    """MUTATE the retry set back onto the queues (instead of waiting for the backoff)."""
    conn = Conn(port, {})
    try:
        conn.call("MUTATE", {"cmd": "requeue", "target": "retries"})
    finally:
        conn.close()


def drain(
    ledger: Ledger,
    db: Callable[[], redis.Redis],
    port: int,
    *,
    requeue: bool,
    timeout: float,
    lossy: bool = False,
) -> None:
    """Wait until every acknowledged push ran and no job is left in Redis (`lossy`: Redis may
    have lost acknowledged pushes, appendfsync everysec: until no job is left; the caller
    checks what never ran).

    Jobs whose FETCH reply was lost come back after their reservation and retry backoff; a quick
    run requeues the retry set instead of waiting for the backoff.
    """

    def drained() -> bool:
        if requeue:
            requeue_retries(port)
        return (lossy or not ledger.missing()) and left_in_redis(db())["jobs"] == 0

    deadline = time.monotonic() + timeout
    while not drained():
        assert time.monotonic() < deadline, (
            f"not drained: {len(ledger.missing())} never ran, Redis has {left_in_redis(db())}"
        )
        time.sleep(0.2)


class Load:
    """A producer thread and worker threads on one broker port."""

    def __init__(self, port: int, workers: int, prefix: str) -> None:
        self.ledger = Ledger()
        self.producer = Producer(port, self.ledger, QUEUE, prefix)
        self.workers = [Worker(port, self.ledger, QUEUE, f"w{i}") for i in range(workers)]

    def __enter__(self) -> "Load":
        self.producer.start()
        for worker in self.workers:
            worker.start()
        return self

    def stop_producing(self) -> None:
        self.producer.stop.set()
        self.producer.join(30)

    def __exit__(self, *exc: object) -> None:
        self.stop_producing()
        for worker in self.workers:
            worker.stop.set()
        for worker in self.workers:
            worker.join(30)

    def progress(self, jobs: int) -> Callable[[], bool]:
        """A check that `jobs` more jobs were finished than now."""
        target = len(self.ledger.done) + jobs
        return lambda: len(self.ledger.done) >= target

    def check(self) -> None:
        """No thread failed, no call hung, and every duplicate was in flight at a failure."""
        threads: list[Producer | Worker] = [self.producer, *self.workers]
        assert [t.failure for t in threads if t.failure] == []
        assert self.ledger.hangs == 0, self.ledger.errors
        assert self.ledger.duplicates() <= self.ledger.in_flight()


@pytest.fixture
def unix_redis() -> Iterator[Callable[[Path], redis.Redis]]:
    """redis-py clients on embedded Redis sockets, closed at the end."""
    opened: list[redis.Redis] = []

    def open_(data_dir: Path) -> redis.Redis:
        client = redis.Redis(unix_socket_path=str(data_dir / "redis.sock"), decode_responses=True)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.close()


def embedded_url(data_dir: Path) -> str:
    return f"unix://{data_dir / 'redis.sock'}"


def redis_pid(data_dir: Path) -> int:
    try:
        return int((data_dir / "redis.pid").read_text())
    except (OSError, ValueError):
        return 0


@pytest.fixture
def embedded_broker(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> Callable[..., BrokerProcess]:
    """Brokers with their embedded Redis in tmp_path (broker_process's teardown stops a
    redis-server that a killed broker left running)."""

    def make(*args: str) -> BrokerProcess:
        return broker_process(*args, "--data-dir", str(tmp_path), embedded=True)

    return make


# -- the broker killed under load ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kills", "jobs_between", "embedded"),
    [
        pytest.param(3, 300, True, id="fast"),
        pytest.param(25, 2000, False, id="chaos-external", marks=CHAOS),
        pytest.param(25, 2000, True, id="chaos-embedded", marks=CHAOS),
    ],
)
def test_broker_sigkill_under_load(
    broker_process: Callable[..., BrokerProcess],
    embedded_broker: Callable[..., BrokerProcess],
    redis_url: str,
    rdb: redis.Redis,
    unix_redis: Callable[[Path], redis.Redis],
    tmp_path: Path,
    kills: int,
    jobs_between: int,
    embedded: bool,
) -> None:
    broker = (embedded_broker if embedded else broker_process)(*FAST_ARGS)

    def db() -> redis.Redis:
        return unix_redis(tmp_path) if embedded else rdb

    with Load(broker.port, workers=3, prefix="bk") as load:
        ledger = load.ledger
        for _ in range(kills):
            wait_for(load.progress(jobs_between), 60, "progress before a kill")
            broker.kill()
            # Nothing changes Redis while the broker is dead: every acknowledged push must be
            # stored or have run (a job is noted as run before its ACK is sent).
            pushed, stored, ran = set(ledger.pushed), stored_jobs(db()), set(ledger.runs)
            assert pushed - stored - ran == set()
            broker.start()
        wait_for(load.progress(jobs_between), 60, "progress after the last restart")
        load.stop_producing()
        drain(ledger, db, broker.port, requeue=kills < 10, timeout=180)
        load.check()
    assert left_in_redis(db()) == {"jobs": 0, "queue": 0, "working": 0, "retries": 0}
    check_store(embedded_url(tmp_path) if embedded else redis_url)
    assert broker.stop() == 0
    assert "Traceback" not in broker.log.read_text()
    record(
        "broker-sigkill" + ("-embedded" if embedded else ""),
        pushed=len(ledger.pushed),
        kills=kills,
        in_flight=len(ledger.in_flight()),
        duplicates=len(ledger.duplicates()),
        lost=len(ledger.missing()),
    )


# -- workers killed with jobs in flight ---------------------------------------------------------


def start_worker(port: int, log: Path, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chaos.load", str(port), QUEUE, log.stem, str(log), *options],
        cwd=ROOT,
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(10)


def test_worker_sigkill_jobs_come_back_through_expiry(
    broker_process: Callable[..., BrokerProcess],
    redis_url: str,
    rdb: redis.Redis,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    broker = broker_process(*FAST_ARGS, "--reaper-interval", "0.05")
    conn = Conn(broker.port, {})
    jids = [f"held-{n:04d}" for n in range(20)]
    for jid in jids:
        conn.call(
            "PUSH", {"jid": jid, "jobtype": "x", "args": [], "queue": QUEUE, "reserve_for": 1}
        )
    logs = [tmp_path / f"w{n}.log" for n in range(2)]
    processes += [start_worker(broker.port, log, "--hold", "3") for log in logs]
    wait_for(
        lambda: all(log.exists() and len(read_log(str(log))[0]) == 3 for log in logs), 20, "held"
    )
    for process in processes:
        kill(process)
    held = set().union(*(read_log(str(log))[0] for log in logs))
    assert len(held) == 6

    # Each held reservation expires and is failed by the reaper into the retry set.
    wait_for(lambda: rdb.zcard(QueueKeys(QUEUE).retries) == 6, 20, "reservations reaped")
    for jid in held:
        failure = json.loads(rdb.hget(QueueKeys(QUEUE).jobs, jid))["failure"]
        assert failure["errtype"] == "ReservationExpired" and failure["retry_count"] == 0
    requeue_retries(broker.port)

    ledger = Ledger()
    worker = Worker(broker.port, ledger, QUEUE, "after")
    worker.start()
    wait_for(lambda: set(ledger.done) == set(jids), 20, "every job run")
    worker.stop.set()
    worker.join(10)
    assert worker.failure is None and max(ledger.runs.values()) == 1
    assert left_in_redis(rdb) == {"jobs": 0, "queue": 0, "working": 0, "retries": 0}
    conn.close()
    check_store(redis_url)


@pytest.mark.parametrize("kills", [pytest.param(15, marks=CHAOS, id="chaos")])
def test_worker_sigkills_under_load(
    broker_process: Callable[..., BrokerProcess],
    redis_url: str,
    rdb: redis.Redis,
    processes: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    kills: int,
) -> None:
    """Worker processes killed one after another while jobs flow; retries come back on their
    own (after the chaos jobs' backoff, chaos/load.py), nothing is requeued by hand."""
    broker = broker_process(*FAST_ARGS, "--reaper-interval", "0.2")
    ledger = Ledger()
    producer = Producer(broker.port, ledger, QUEUE, "wk", reserve_for=2)
    producer.start()
    logs: list[Path] = []

    def spawn() -> None:
        log = tmp_path / f"w{len(logs)}.log"
        logs.append(log)
        processes.append(start_worker(broker.port, log, "--threads", "2", "--work", "0.005"))

    def finished() -> int:
        return sum(len(read_log(str(log))[1]) for log in logs if log.exists())

    for _ in range(3):
        spawn()
    for n in range(kills):
        target = finished() + 500
        wait_for(lambda t=target: finished() >= t, 60, "progress before a kill")
        kill(processes[n])
        spawn()
    producer.stop.set()
    producer.join(30)
    assert producer.failure is None

    def all_ran() -> bool:
        ran = set().union(*(read_log(str(log))[0] for log in logs if log.exists()))
        return not set(ledger.pushed) - ran and live_jobs(rdb, QUEUE) == 0

    wait_for(all_ran, 240, "every job run (retries back after their backoff)")
    for process in processes:
        kill(process)
    runs: Counter[str] = Counter()
    in_flight: set[str] = set()  # started by a worker process that was killed before its ACK
    for log in logs:
        log_runs, log_done = read_log(str(log))
        runs += log_runs
        in_flight |= set(log_runs) - log_done
    duplicates = {jid for jid, count in runs.items() if count > 1}
    assert duplicates <= in_flight | ledger.in_flight()
    check_store(redis_url)
    record(
        "worker-sigkill",
        pushed=len(ledger.pushed),
        kills=kills,
        in_flight=len(in_flight),
        duplicates=len(duplicates),
        lost=len(set(ledger.pushed) - set(runs)),
    )


# -- the embedded Redis killed under load -------------------------------------------------------


@pytest.mark.parametrize(
    ("kills", "appendfsync"),
    [
        pytest.param(2, "always", id="fast-always"),
        pytest.param(12, "always", id="chaos-always", marks=CHAOS),
        pytest.param(12, "everysec", id="chaos-everysec", marks=CHAOS),
    ],
)
def test_redis_sigkill_under_load(
    embedded_broker: Callable[..., BrokerProcess],
    unix_redis: Callable[[Path], redis.Redis],
    tmp_path: Path,
    kills: int,
    appendfsync: str,
) -> None:
    broker = embedded_broker(*FAST_ARGS, "--appendfsync", appendfsync)
    killed_at: list[float] = []
    with Load(broker.port, workers=2, prefix="rk") as load:
        ledger = load.ledger
        for _ in range(kills):
            wait_for(load.progress(300), 60, "progress before a kill")
            pid = redis_pid(tmp_path)
            os.kill(pid, signal.SIGKILL)
            killed_at.append(time.time())
            try:  # a worker arriving meanwhile gets a clear error, or gets in
                Conn(broker.port, {"wid": "newcomer"}).close()
            except WireError as exc:
                assert "redis unavailable" in str(exc) or "LOADING" in str(exc)
            wait_for(lambda p=pid: redis_pid(tmp_path) not in (0, p), 30, "redis-server restarted")
            assert broker.process is not None and broker.process.poll() is None
        wait_for(load.progress(300), 60, "progress after the last restart")
        load.stop_producing()
        lossy = appendfsync != "always"
        drain(
            ledger,
            lambda: unix_redis(tmp_path),
            broker.port,
            requeue=True,
            timeout=120,
            lossy=lossy,
        )
        load.check()
    # While Redis was away, clients got a clear error reply, and kept their connections.
    assert ledger.errors["ERR redis unavailable:"] > 0, ledger.errors
    assert ledger.errors["Lost"] == 0, ledger.errors
    lost = ledger.missing()
    if appendfsync == "always":
        assert lost == set()
    else:  # everysec: at most the writes of the last ~2 s before a kill (redis.conf, AOF)
        assert all(any(0 <= t - ledger.pushed[jid] <= 2 for t in killed_at) for jid in lost)
    check_store(embedded_url(tmp_path))
    assert broker.stop() == 0
    assert "Traceback" not in broker.log.read_text()
    record(
        f"redis-sigkill-{appendfsync}",
        pushed=len(ledger.pushed),
        kills=kills,
        error_replies=ledger.errors["ERR redis unavailable:"],
        slowest_reply_s=round(ledger.slowest, 3),
        duplicates=len(ledger.duplicates()),
        lost=len(lost),
    )


def test_a_redis_outage_logs_no_tracebacks(
    embedded_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = embedded_broker(*FAST_ARGS)
    with Load(broker.port, workers=1, prefix="ol") as load:
        wait_for(load.progress(100), 30, "progress")
        pid = redis_pid(tmp_path)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: redis_pid(tmp_path) not in (0, pid), 30, "redis-server restarted")
        wait_for(load.progress(100), 30, "progress after the restart")
    assert load.ledger.errors["ERR redis unavailable:"] > 0
    assert broker.stop() == 0
    assert "Traceback" not in broker.log.read_text()


def test_an_embedded_redis_that_cannot_start_again_is_retried(
    embedded_broker: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    broker = embedded_broker(*FAST_ARGS)
    manifest = tmp_path / "appendonlydir" / "appendonly.aof.manifest"
    good = manifest.read_bytes()
    manifest.write_bytes(b"not a manifest\n")  # redis-server now exits at start
    pid = redis_pid(tmp_path)
    os.kill(pid, signal.SIGKILL)
    retries = "embedded redis-server did not start again"
    wait_for(lambda: broker.log.read_text().count(retries) >= 2, 30, "failed restarts")
    assert broker.process is not None and broker.process.poll() is None
    manifest.write_bytes(good)
    wait_for(lambda: redis_pid(tmp_path) not in (0, pid), 30, "redis-server restarted")
    wait_for(lambda: _pushed(broker.port), 30, "a PUSH served")
    assert broker.stop() == 0
    assert "Traceback" not in broker.log.read_text()


def _pushed(port: int) -> bool:
    """Whether one PUSH is served, as soon as Redis is back."""
    conn = Conn(port, {})
    try:
        conn.call("PUSH", {"jid": "after-restart-1", "jobtype": "x", "args": []})
    except WireError as exc:
        assert "redis unavailable" in str(exc) or "LOADING" in str(exc)
        return False
    finally:
        conn.close()
    return True


async def test_push_relay_resubscribes_when_redis_dies_during_subscribe() -> None:
    """A Redis that resets the connection in the middle of SUBSCRIBE (killed right then)
    makes the relay subscribe again; it used to crash the broker."""
    resets = 0
    twice = trio.Event()

    async def die_on_subscribe(stream: trio.SocketStream) -> None:
        nonlocal resets
        await stream.receive_some()  # the SUBSCRIBE
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.socket.close()  # a reset, as from a killed process
        resets += 1
        if resets == 2:
            twice.set()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, die_on_subscribe, listeners)
        address = Address(f"redis://127.0.0.1:{port}")
        nursery.start_soon(relay, lambda: address, Doorbell(), Doorbell())
        with trio.fail_after(10):
            await twice.wait()
        nursery.cancel_scope.cancel()


# -- several brokers reaping one Redis ----------------------------------------------------------


def info(port: int) -> dict[str, Any]:
    conn = Conn(port, {})
    try:
        document: dict[str, Any] = json.loads(conn.call("INFO"))
        return document
    finally:
        conn.close()


def moved(ports: list[int], task: str, field: str) -> int:
    return sum(info(port)["faktory"]["tasks"][task][field] for port in ports)


@pytest.mark.parametrize(
    ("brokers", "count", "wait_retries"),
    [
        pytest.param(3, 300, False, id="fast"),
        pytest.param(4, 5000, True, id="chaos", marks=CHAOS),
    ],
)
def test_several_brokers_move_each_job_once(
    broker_process: Callable[..., BrokerProcess],
    redis_url: str,
    rdb: redis.Redis,
    brokers: int,
    count: int,
    wait_retries: bool,
) -> None:
    loops = ["--scheduler-interval", "0.02", "--reaper-interval", "0.02"]
    dead = ["--dead-purge-interval", "0.02", "--dead-ttl", "1"]
    ports = [broker_process(*FAST_ARGS, *loops, *dead).port for _ in range(brokers)]
    conns = [Conn(port, {"wid": f"w{n}"}) for n, port in enumerate(ports)]
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))

    def jobs(queue: str, **extra: Any) -> list[dict[str, Any]]:
        return [
            {"jid": f"{queue}-{n:06d}", "jobtype": "x", "args": [], "queue": queue, **extra}
            for n in range(count)
        ]

    assert json.loads(conns[0].call("PUSHB", jobs("sched", at=at))) == {}
    busy_jobs = jobs("busy", reserve_for=1, custom={"backoff": RETRY_BACKOFF})  # retried soon
    assert json.loads(conns[1].call("PUSHB", busy_jobs)) == {}
    assert json.loads(conns[2].call("PUSHB", jobs("dead", retry=-1))) == {}
    for n in range(count):
        assert json.loads(conns[n % brokers].call("FETCH", "busy"))["jid"] == f"busy-{n:06d}"
        jid = json.loads(conns[n % brokers].call("FETCH", "dead"))["jid"]
        conns[n % brokers].call("FAIL", {"jid": jid, "message": "to the dead set"})

    sched, busy, gone = QueueKeys("sched"), QueueKeys("busy"), QueueKeys("dead")
    wait_for(lambda: rdb.llen(sched.queue) == count, 30, "scheduled jobs enqueued")
    # every reservation reaped (counted by the brokers' reapers; the retries set itself may
    # already be giving back the first of them when the last are reaped)
    wait_for(lambda: moved(ports, "Busy", "reaped") == count, 30, "reservations reaped")
    wait_for(lambda: rdb.zcard(busy.working) == 0, 30, "no reservation left")
    retrying, back = rdb.pipeline().zcard(busy.retries).llen(busy.queue).execute()  # MULTI
    assert retrying + back == count  # each job retrying, or back in line
    wait_for(lambda: rdb.hlen(gone.jobs) == 0, 30, "dead jobs purged")
    assert sorted(rdb.lrange(sched.queue, 0, -1)) == [j["jid"] for j in jobs("sched")]
    for payload in rdb.hvals(busy.jobs):
        assert json.loads(payload)["failure"]["retry_count"] == 0
    # every reaped reservation and every FAIL to the dead set counted once
    assert int(rdb.hget(keys.STATS, "failures")) == 2 * count
    assert moved(ports, "Scheduled", "enqueued") == count
    assert moved(ports, "Busy", "reaped") == count
    assert moved(ports, "Dead", "enqueued") == count
    if wait_retries:
        wait_for(lambda: rdb.llen(busy.queue) == count, 120, "retries enqueued")
        assert sorted(rdb.lrange(busy.queue, 0, -1)) == [j["jid"] for j in jobs("busy")]
        assert moved(ports, "Retries", "enqueued") == count
    for conn in conns:
        conn.close()
    check_store(redis_url)
    record("several-brokers", brokers=brokers, jobs_moved=3 * count, moved_twice=0, lost=0)
