"""Process workers over their life: recycling at a limit, which children are replaced, and
the Supervisor in code; real processes against a real broker."""

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient
from hopper_client.supervisor import Supervisor
from tests.conftest import eventually
from tests.supervised import ROOT, Supervisors, alive, url, workers

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("store_mode"),
    pytest.mark.on_cluster,
]


@pytest.fixture
def supervisors(tmp_path: Path) -> Iterator[Supervisors]:
    with Supervisors(tmp_path) as started:
        yield started


@pytest.mark.parametrize(
    "limit", [["--max-jobs", "2"], ["--max-memory", "1"]], ids=["jobs", "memory"]
)
async def test_a_child_is_recycled_at_its_limit(
    broker: App, supervisors: Supervisors, limit: list[str]
) -> None:
    # one process (a limit alone implies --processes 1); 1 MiB: every job passes it
    supervisor = supervisors.start("jobs", "--url", url(broker), *limit)
    async with AsyncClient(url(broker)) as producer:
        jids = [await producer.push("nap", [0]) for _ in range(4)]
        for jid in jids:
            await producer.result(jid, timeout=30)
    pids = [supervisor.mark(jid, "finished") for jid in jids]
    per_child = 2 if limit[0] == "--max-jobs" else 1
    # jobs fetched before a child retired may run in it too, past the limit
    assert len({mark["pid"] for mark in pids if mark}) >= len(jids) // (per_child + 1)
    assert "is retiring: starting another" in supervisor.log.read_text()
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()


async def test_a_supervisor_in_code(
    broker: App,
    supervisors: Supervisors,
    rdb: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    nursery: trio.Nursery,
) -> None:
    monkeypatch.chdir(supervisors.directory)  # the children import `jobs` there, as hopper-worker
    monkeypatch.setenv("MARKS", str(supervisors.directory))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    supervisor = Supervisor(["jobs", "--url", url(broker)], processes=2)
    exit_codes = []

    async def supervise() -> None:
        exit_codes.append(await supervisor.arun())

    nursery.start_soon(supervise)
    await eventually(lambda: len(workers(rdb)) == 2, timeout=30)
    assert {child.wid for child in supervisor.children} == workers(rdb).keys()
    async with AsyncClient(url(broker)) as producer:
        assert await producer.result(await producer.push("nap", [0]), timeout=30) is None
    supervisor.terminate()
    await eventually(lambda: exit_codes == [0], timeout=30)
    assert workers(rdb) == {}


async def test_a_retiring_child_finishes_its_jobs_while_its_replacement_works(
    broker: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    supervisor = supervisors.start(
        "jobs", "--url", url(broker), "--max-jobs", "1", "-c", "2", "--grace", "1"
    )
    (first,) = (await eventually(lambda: len(f := workers(rdb)) == 1 and f, timeout=30)).values()
    async with AsyncClient(url(broker)) as producer:
        slow = await producer.push("nap", [3])
        await eventually(lambda: supervisor.mark(slow, "started"))
        quick = await producer.push("nap", [0])  # its end retires the child
        # the replacement registers while the old child still runs the slow job
        await eventually(lambda: len(workers(rdb)) == 2, timeout=30)
        assert not supervisor.mark(slow, "finished")
        later = await producer.push("nap", [0])  # by the replacement, or a FETCH sent before
        assert await producer.result(later, timeout=30) is None
        assert await producer.result(slow, timeout=30) is None  # not cut by any grace
        state = await producer.state(slow)
    assert state.attempts == 1 and state.failure is None
    marks = [supervisor.mark(jid, "finished") for jid in (slow, quick)]
    assert [mark["pid"] if mark else None for mark in marks] == [first, first]
    await eventually(lambda: not alive(first), timeout=30)


async def test_a_child_stopped_on_its_own_is_not_replaced(
    broker: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    supervisor = supervisors.start("jobs", "--url", url(broker), "--processes", "2")
    found = await eventually(lambda: len(f := workers(rdb)) == 2 and f, timeout=30)
    stopped, kept = found.values()
    os.kill(stopped, signal.SIGTERM)
    await eventually(lambda: "was stopped on purpose: not replaced" in supervisor.log.read_text())
    assert workers(rdb) == {wid: pid for wid, pid in found.items() if pid == kept}
    async with AsyncClient(url(broker)) as producer:
        jid = await producer.push("nap", [0])
        assert await producer.result(jid, timeout=30) is None
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
    assert supervisor.process.returncode == 0, supervisor.log.read_text()


def sockets(pid: int) -> set[str]:
    """The sockets a process holds open (`socket:[inode]`)."""
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)).startswith("socket:"):
                found.add(target)
    return found


async def test_a_child_holds_no_socket_of_the_supervisor_nor_of_its_siblings(
    broker: App, supervisors: Supervisors, rdb: redis.Redis
) -> None:
    if not Path("/proc/self/fd").exists():
        pytest.skip("no /proc")
    supervisor = supervisors.start("jobs", "--url", url(broker), "--processes", "3")
    pids = (await eventually(lambda: len(f := workers(rdb)) == 3 and f, timeout=30)).values()
    held = {pid: sockets(pid) for pid in [supervisor.process.pid, *pids]}
    for pid in pids:
        others = set().union(*(sockets_ for other, sockets_ in held.items() if other != pid))
        assert held[pid] and not held[pid] & others  # its own connections and link end only
    supervisor.process.send_signal(signal.SIGTERM)
    await eventually(supervisor.exited, timeout=30)
