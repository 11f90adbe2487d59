"""Client.push from many threads and AsyncClient.push from many tasks (trio, asyncio): one
connection shared by them (client/shared.py), each push answered to its own caller, cancelled
tasks leaving it working, and pushes resent after it breaks landing once."""

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import redis
import trio

from chaos.load import wait_for
from hopper_broker.app import App
from hopper_client import AsyncClient, Client, ServerError
from hopper_client.schema.errors import JID_IN_USE
from tests.conftest import BrokerProcess
from tests.gate_proxy import GateProxy
from tests.test_client_faults import Proxy, proxy, via  # noqa: F401  (the proxy fixture)

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

THREADS = 20
PUSHES = 50  # per thread


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run work(0) ... work(count - 1) in threads started together; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(n: int) -> None:
        try:
            start.wait(10)
            work(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a pushing thread did not finish"
    if errors:
        raise errors[0]


async def test_threads_push_over_one_connection_each_answered_in_its_own_thread(
    broker: App, rdb: redis.Redis
) -> None:
    client = Client(f"tcp://127.0.0.1:{broker.port}")
    pushed: dict[int, list[str]] = {}
    refused: dict[int, str] = {}

    def work(n: int) -> None:
        if n == 7:
            client.push("work", jid="taken-jid-0")  # in use when pushed again below
        jids = [client.push("work", [n, i], jid=f"thread-{n:02d}-{i:04d}") for i in range(PUSHES)]
        if n == 7:
            try:
                client.push("work", jid="taken-jid-0")
            except ServerError as exc:
                refused[n] = str(exc)
        pushed[n] = jids

    await trio.to_thread.run_sync(in_threads, THREADS, work)
    info = await trio.to_thread.run_sync(client.info)
    assert info["server"]["connections"] == 2  # the pushes' shared one and INFO's pooled one
    await trio.to_thread.run_sync(client.close)
    for n, jids in pushed.items():
        assert jids == [f"thread-{n:02d}-{i:04d}" for i in range(PUSHES)]
    assert refused == {7: f"ERR {JID_IN_USE.format('taken-jid-0')}"}, refused
    assert rdb.llen("hopper:q:{default}:queue") == THREADS * PUSHES + 1


async def test_pushes_from_threads_resent_after_the_connection_breaks_land_once(
    proxy: Proxy,  # noqa: F811
    rdb: redis.Redis,
) -> None:
    client = Client(via(proxy))
    broke = threading.Event()

    def work(n: int) -> None:
        for i in range(PUSHES):
            if n == 0 and i == PUSHES // 2:
                proxy.drop_reply_to = b"PUSH "  # that connection dies with replies owed
                broke.set()
            client.push("work", [n, i], jid=f"thread-{n:02d}-{i:04d}")

    await trio.to_thread.run_sync(in_threads, THREADS, work)
    await trio.to_thread.run_sync(client.close)
    assert broke.is_set() and proxy.drop_reply_to is None  # the fault was injected
    assert rdb.llen("hopper:q:{default}:queue") == THREADS * PUSHES  # each once


TASKS = 30


async def test_trio_tasks_push_over_one_connection_and_cancelled_ones_leave_it_working(
    broker: App, rdb: redis.Redis
) -> None:
    pushed: dict[int, list[str]] = {}
    async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as client:
        await client.push("work", jid="taken-jid-0")

        async def work(n: int) -> None:
            jids = [
                await client.push("work", [n, i], jid=f"task-{n:02d}-{i:04d}") for i in range(20)
            ]
            pushed[n] = jids

        async def cancelled(n: int) -> None:
            with trio.move_on_after(0):  # cancelled at its first wait: writing or reading
                await client.push("work", [n], jid=f"cancelled-{n:02d}")

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(TASKS):
                    nursery.start_soon(cancelled if n % 5 == 0 else work, n)
            with pytest.raises(ServerError, match="already in use"):
                await client.push("work", jid="taken-jid-0")
            info = await client.info()
    assert info["server"]["connections"] in (2, 3)  # shared (again, if a cancel broke it), INFO's
    for n, jids in pushed.items():
        assert jids == [f"task-{n:02d}-{i:04d}" for i in range(20)]
    assert len(pushed) == TASKS - TASKS // 5
    stored = rdb.llen("hopper:q:{default}:queue")
    assert len(pushed) * 20 + 1 <= stored <= len(pushed) * 20 + 1 + TASKS // 5


async def test_asyncio_tasks_push_over_one_connection(broker: App, rdb: redis.Redis) -> None:
    async def main() -> tuple[list[str], int]:
        async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as client:
            jids = await asyncio.gather(
                *(client.push("work", [n], jid=f"asyncio-{n:04d}") for n in range(200))
            )
            return jids, (await client.info())["server"]["connections"]

    jids, connections = await trio.to_thread.run_sync(asyncio.run, main())
    assert jids == [f"asyncio-{n:04d}" for n in range(200)] and connections == 2
    assert rdb.llen("hopper:q:{default}:queue") == 200


async def test_pushes_from_tasks_resent_after_the_connection_breaks_land_once(
    proxy: Proxy,  # noqa: F811
    rdb: redis.Redis,
) -> None:
    async with AsyncClient(via(proxy)) as client:

        async def work(n: int) -> None:
            for i in range(PUSHES):
                if n == 0 and i == PUSHES // 2:
                    proxy.drop_reply_to = b"PUSH "  # that connection dies with replies owed
                await client.push("work", [n, i], jid=f"task-{n:02d}-{i:04d}")

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for n in range(TASKS):
                    nursery.start_soon(work, n)
    assert proxy.drop_reply_to is None  # the fault was injected
    assert rdb.llen("hopper:q:{default}:queue") == TASKS * PUSHES  # each once


@pytest.mark.slow
def test_threads_pushing_through_a_broker_killed_and_restarted_land_each_job_once(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis
) -> None:
    hopper = broker_process()
    client = Client(hopper.url, retry_for=30)
    halfway = threading.Event()

    def work(n: int) -> None:
        for i in range(PUSHES * 2):
            if i == PUSHES:
                halfway.set()
            client.push("work", [n, i], jid=f"thread-{n:02d}-{i:04d}")

    with ThreadPoolExecutor(1) as pool:
        pushing = pool.submit(in_threads, THREADS, work)
        assert halfway.wait(30)
        hopper.kill()  # SIGKILL, with pushes owed on the shared connection
        hopper.start()
        pushing.result(60)  # every push answered (its error raised here)
    client.close()
    assert rdb.llen("hopper:q:{default}:queue") == THREADS * PUSHES * 2  # each once


class Interrupt(Exception):
    """What a signal handler raises in the main thread (KeyboardInterrupt, an alarm timeout)."""


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise Interrupt(f"signal {signum}")


class Pushers:
    """A Client through a GateProxy, whose pushes from threads `push(name)` records in
    `results` (the jid, or what it raised); `interrupt_main()` makes the main thread's call
    raise Interrupt, as a signal handler (Ctrl-C) would."""

    def __init__(self, port: int, retry_for: float) -> None:
        self.gate = GateProxy(port)
        self.client = Client(self.gate.url, timeout=3, retry_for=retry_for)
        self.results: dict[str, Any] = {}
        self.main = threading.main_thread().ident
        assert self.main == threading.get_ident()

    def push(self, name: str) -> None:
        try:
            self.results[name] = self.client.push("work", jid=f"shared-{name}")
        except BaseException as exc:
            self.results[name] = exc

    def thread(self, name: str) -> threading.Thread:
        return threading.Thread(target=self.push, args=(name,), daemon=True)

    def interrupt_main(self) -> None:
        assert self.main is not None
        signal.pthread_kill(self.main, signal.SIGUSR1)


@contextmanager
def pushers(port: int, retry_for: float) -> Iterator[Pushers]:
    """Pushers whose connection is open, the interrupting signal handler in place meanwhile;
    closing the client at the end fails whatever is still owed (frees a stranded thread)."""
    previous = signal.signal(signal.SIGUSR1, _raise_interrupt)
    harness = Pushers(port, retry_for)
    try:
        harness.client.push("warm", jid="warm-up-0000")  # opens the shared connection
        yield harness
    finally:
        signal.signal(signal.SIGUSR1, previous)
        harness.client.close()
        harness.gate.close()


def test_a_thread_interrupted_while_it_waits_leaves_the_others_their_replies(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    """Three threads push on the shared connection: T1 reads the replies, the main thread and
    T2 wait for theirs. A signal handler that raises (Ctrl-C) ends the main thread's push.
    Once the broker's replies come, T1 and T2 each return their own."""
    with pushers(broker_process().port, retry_for=1) as p:
        shared = p.client._shared
        assert shared is not None
        seen = p.gate.pushes
        p.gate.hold_replies()
        t1, t2 = p.thread("t1"), p.thread("t2")
        t1.start()
        p.gate.wait_pushes(seen + 1)
        wait_for(lambda: shared._reading.locked(), 10, "T1 reading")

        def interrupt_main() -> None:
            p.gate.wait_pushes(seen + 2)  # the main thread's PUSH was written: it now waits
            t2.start()
            p.gate.wait_pushes(seen + 3)
            time.sleep(0.1)  # T2 reaches its gate
            p.interrupt_main()

        threading.Thread(target=interrupt_main, daemon=True).start()
        with pytest.raises(Interrupt):
            p.client.push("work", jid="shared-main")
        p.gate.release_replies()
        t1.join(10)
        assert p.results.get("t1") == "shared-t1"
        t2.join(10)  # 3 times the client's timeout
        stranded = t2.is_alive()
    assert not stranded, f"T2's push never returned though its reply came ({p.results})"
    assert p.results.get("t2") == "shared-t2"


def test_a_thread_interrupted_while_it_writes_breaks_the_connection(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    """The main thread's push of a large job is interrupted (a signal handler that raises)
    while its line is half written; T2 and T3 push meanwhile. The connection is dropped (a
    half line would join T2's), so each of their pushes returns with its job stored, or
    raises: none is reported pushed and lost."""
    with pushers(broker_process().port, retry_for=5) as p:
        shared = p.client._shared
        assert shared is not None
        p.gate.hold_requests()  # the broker stops reading: a large line is written in part
        others = [p.thread(name) for name in ("t2", "t3")]

        def interrupt_main() -> None:
            wait_for(lambda: shared._writing.locked(), 10, "the main thread writing its line")
            time.sleep(0.3)  # its sendall fills the socket buffers and blocks
            for thread in others:
                thread.start()
            wait_for(lambda: len(shared._unsent) == 2, 10, "T2's and T3's lines waiting")
            p.interrupt_main()

        threading.Thread(target=interrupt_main, daemon=True).start()
        with pytest.raises(Interrupt):
            p.client.push("big", ["x" * 12_000_000], jid="shared-big")
        p.gate.release_requests()
        for thread in others:
            thread.join(30)
        assert not any(thread.is_alive() for thread in others), p.results
        stored = {n: p.client.state(f"shared-{n}").state != "unknown" for n in ("t2", "t3")}
    # each push either returned its jid with its job stored, or raised
    wrong = [n for n in ("t2", "t3") if p.results[n] == f"shared-{n}" and not stored[n]]
    assert not wrong, f"reported pushed, never stored: {wrong} (results {p.results})"
