"""`hopper run --processes 2`: a supervisor and two broker processes sharing one port over one
Redis; real processes, sockets and signals. A child killed with SIGKILL under load loses no job,
the other serves on, and the supervisor starts it again."""

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from tests.conftest import (
    LEFT_BETWEEN_STEPS,
    check_store,
    clean_env,
    eventually,
    free_port,
    live_jobs,
    on_rig,
)
from tests.wire import Wire, WireError, job

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"hopper_broker\.app\[(\d+)\]: Hopper listening")
SUPERVISING = re.compile(r"(\d+) broker processes on 127\.0\.0\.1:(\d+)")
JOBS = 300
DROPPED = (EOFError, OSError, trio.BrokenResourceError)  # the connection's broker was killed
AGAIN = {"backoff": {"kind": "fixed", "delay": 0}}  # a reservation lost: the job runs again now
QUICK = ["--min-reservation", "1", "--reaper-interval", "0.1", "--fetch-timeout", "0.3"]


class Supervised:
    """`hopper run --processes 2` as a real process, its log (every process's) in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.log = tmp_path / "hopper.log"
        command = [sys.executable, "-m", "hopper_broker", "run", "--processes", "2", "--bind"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "127.0.0.1:0", "--dashboard-bind", "off", *QUICK, *args],
                cwd=ROOT,
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = 0

    def text(self) -> str:
        return self.log.read_text()

    def listening(self) -> list[int]:
        """The pids of the broker processes that came to listen, in order."""
        return [int(pid) for pid in LISTENING.findall(self.text())]

    async def started(self, children: int = 2) -> list[int]:
        def ready() -> bool:
            assert self.process.poll() is None, self.text()
            return len(self.listening()) >= children

        await eventually(ready, timeout=20)
        found = SUPERVISING.search(self.text())
        assert found and found.group(1) == "2", self.text()
        self.port = int(found.group(2))
        return self.listening()

    def children(self) -> set[int]:
        """The live broker processes under the supervisor (its redis-server left out)."""
        tasks = Path(f"/proc/{self.process.pid}/task").glob("*/children")
        pids = {int(pid) for task in tasks for pid in task.read_text().split()}
        marked = b"--supervisor-fd"
        return {pid for pid in pids if marked in Path(f"/proc/{pid}/cmdline").read_bytes()}

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


@pytest.fixture
def supervised(tmp_path: Path) -> Any:
    started: list[Supervised] = []

    def start(*args: str) -> Supervised:
        started.append(Supervised(tmp_path, *args))
        return started[-1]

    yield start
    for one in started:
        if one.process.poll() is None:
            one.process.kill()
            one.process.wait(10)


async def serving_pid(port: int) -> int:
    """The pid of the broker process a new connection reached (INFO's server.pid)."""
    wire = await Wire.open(port, hello={})
    try:
        pid: int = json.loads(await wire.call("INFO"))["server"]["pid"]
        return pid
    finally:
        await wire.aclose()


async def state(wire: Wire, jid: str) -> str:
    found: str = json.loads(await wire.call("JOB STATE", jid))["state"]
    return found


async def reached_pids(port: int, wanted: set[int]) -> set[int]:
    """Open connections until each of `wanted` answered one (bounded: the kernel spreads new
    connections over the listeners by a hash of their addresses)."""
    seen: set[int] = set()
    for _ in range(200):
        seen.add(await serving_pid(port))
        if wanted <= seen:
            break
    return seen


@on_rig
async def test_a_child_killed_under_load_loses_no_job(
    supervised: Any, tmp_path: Path, store_mode: str, store_url: str, rdb: redis.Redis
) -> None:
    """On its embedded Redis, and on the cluster rig."""
    if store_mode == "cluster":
        hopper: Supervised = supervised("--redis-url", store_url)
        db = rdb
    else:
        store_url = f"unix://{tmp_path / 'data' / 'redis.sock'}"
        hopper = supervised("--data-dir", str(tmp_path / "data"))
        db = redis.Redis(unix_socket_path=str(tmp_path / "data" / "redis.sock"))
    first = await hopper.started()
    assert hopper.children() == set(first)
    assert await reached_pids(hopper.port, set(first)) == set(first)
    jids = [f"job-{n:05d}" for n in range(JOBS)]
    acks: Counter[str] = Counter()
    finished = trio.Event()

    async def push(share: list[str]) -> None:
        for jid in share:
            uncertain = False  # a PUSH whose reply was lost: stored, or not
            while True:
                try:
                    wire = await Wire.open(hopper.port, hello={})
                    try:
                        if uncertain and await state(wire, jid) != "unknown":
                            break  # stored (and maybe done already: not pushed twice)
                        await wire.call("PUSH", job(jid, reserve_for=2, custom=AGAIN))
                        break
                    finally:
                        await wire.aclose()
                except DROPPED:
                    uncertain = True
                    await trio.sleep(0.05)

    async def work(worker: int) -> None:
        while not finished.is_set():
            try:
                wire = await Wire.open(hopper.port, hello={"wid": f"w{worker}"})
                while not finished.is_set():
                    fetched = await wire.call("FETCH", "default")
                    if fetched:
                        jid = json.loads(fetched)["jid"]
                        try:
                            await wire.call("ACK", {"jid": jid})
                        except WireError:
                            continue  # its reservation ran out: it runs again
                        acks[jid] += 1
            except DROPPED:
                await trio.sleep(0.05)  # reconnect: to a live broker process

    async def kill_one() -> None:
        await eventually(lambda: sum(acks.values()) >= JOBS // 3, timeout=20)
        os.kill(first[1], signal.SIGKILL)

    async with trio.open_nursery() as nursery:
        for worker in range(4):
            nursery.start_soon(work, worker)
        nursery.start_soon(kill_one)
        async with trio.open_nursery() as pushers:
            for n in range(3):
                pushers.start_soon(push, jids[n::3])
        await eventually(lambda: live_jobs(db) == 0, timeout=30)
        finished.set()

    # every job acknowledged, none twice; each one done in the store
    assert max(acks.values()) == 1 and set(acks) <= set(jids)
    wire = await Wire.open(hopper.port, hello={})
    states = [await state(wire, jid) for jid in jids]
    await wire.aclose()
    assert set(states) == {"done"}
    if store_mode == "cluster":  # a broker killed between a move's steps: check mends it
        assert set(check_store(store_url, repair=True)) <= LEFT_BETWEEN_STEPS
    check_store(store_url)
    # the supervisor started the killed one again; the other served throughout
    restarted = await hopper.started(children=3)
    assert f"(pid {first[1]}) exited with status -9; restarting" in hopper.text()
    assert hopper.children() == {first[0], restarted[2]}
    assert await reached_pids(hopper.port, hopper.children()) == hopper.children()
    assert hopper.stop() == 0
    assert hopper.text().count("shutting down") == 2
    assert not any(Path(f"/proc/{pid}").exists() for pid in (first[0], restarted[2]))


@on_rig
async def test_external_redis_signals_and_exit(supervised: Any, store_url: str) -> None:
    hopper: Supervised = supervised("--redis-url", store_url)
    pids = await hopper.started()
    hopper.process.send_signal(signal.SIGHUP)
    await eventually(lambda: hopper.text().count("configuration reloaded") == 2)
    assert hopper.children() == set(pids)
    hopper.process.send_signal(signal.SIGTERM)
    assert hopper.process.wait(20) == 0
    assert hopper.text().count("shutting down") == 2
    assert "Traceback" not in hopper.text()


@on_rig
async def test_children_stop_when_the_supervisor_is_killed(supervised: Any, store_url: str) -> None:
    hopper: Supervised = supervised("--redis-url", store_url)
    pids = await hopper.started()
    hopper.process.kill()
    hopper.process.wait(10)
    await eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=15)
    assert hopper.text().count("the supervisor is gone; stopping") == 2


def test_a_first_start_that_fails_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hopper_broker", "run", "--processes", "2", "--bind", "127.0.0.1:0",
         "--redis-url", "redis://127.0.0.1:1", "--redis-start-timeout", "0.5",
         "--dashboard-bind", "off", "--log-level", "ERROR"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()  # the first child's error, once; no other starts
    assert line.startswith("hopper: cannot reach redis at "), line


@on_rig
async def test_reuse_port_lets_two_brokers_share_a_port(tmp_path: Path, store_url: str) -> None:
    port = free_port()
    command = [sys.executable, "-m", "hopper_broker", "run", "--processes", "1", "--reuse-port"]
    command += ["--bind", f"127.0.0.1:{port}", "--redis-url", store_url, "--dashboard-bind", "off"]
    logs = [tmp_path / f"broker{n}.log" for n in range(2)]
    brokers = []
    for log in logs:
        with log.open("wb") as out:
            brokers.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT
                )
            )
    try:
        await eventually(lambda: all("Hopper listening" in log.read_text() for log in logs), 20)
        pids = {broker.pid for broker in brokers}
        assert await reached_pids(port, pids) == pids
    finally:
        for broker in brokers:
            broker.terminate()
            assert broker.wait(20) == 0
