"""Task objects against a real broker: declared once with defaults, arguments checked at
push, options per push, sync and async pushes, eager mode, and the worker command."""

import asyncio
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import faktory
import pytest
import trio

import hopper_client
from hopper_broker.app import App
from hopper_client import AsyncClient, Client, Tasks, current_job
from hopper_client.cli import load

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

SAMPLE = Path(__file__).parent / "sample_app"
DEAD_URL = "tcp://127.0.0.1:1"  # nothing listens: a push that reached the network would fail


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


def registry(address: str = DEAD_URL) -> Tasks:
    jobs = Tasks(address)

    @jobs.task(queue="critical", retry=5, reserve_for=60, priority=7)
    def send_welcome(email: str, name: str = "friend") -> str:
        return f"{name} <{email}>"

    @jobs.task(name="resize")
    async def resize_image(path: str, *sizes: int) -> list[int]:
        await trio.sleep(0)
        return [size * 2 for size in sizes]

    return jobs


def test_a_task_carries_its_defaults_and_checks_arguments_before_any_network() -> None:
    jobs = registry()
    send_welcome, resize = jobs.tasks["send_welcome"], jobs.tasks["resize"]
    job = send_welcome.make("ada@example.com")
    assert (job.jobtype, job.args, job.queue, job.retry) == (
        "send_welcome",
        ["ada@example.com"],
        "critical",
        5,
    )
    assert (job.reserve_for, job.priority) == (60, 7)
    assert send_welcome.make("ada@example.com", name="Ada").args == ["ada@example.com", "Ada"]
    assert resize.make("cat.png", 64, 128).args == ["cat.png", 64, 128]
    with pytest.raises(TypeError, match="send_welcome: missing a required argument: 'email'"):
        send_welcome.push()
    with pytest.raises(TypeError, match="send_welcome: too many positional arguments"):
        send_welcome.push("a@example.com", "A", "extra")
    with pytest.raises(TypeError, match="unexpected keyword argument 'mail'"):
        send_welcome.push("a@example.com", mail="A")
    assert send_welcome("a@example.com", "A") == "A <a@example.com>"  # a plain call


def test_options_change_one_push_not_the_task() -> None:
    jobs = registry()
    task = jobs.tasks["send_welcome"]
    bulk = task.options(queue="bulk", retry=0, timeout=30)
    job = bulk.make("x@example.com")
    assert (job.queue, job.retry, job.custom) == ("bulk", 0, {"timeout": 30})
    assert task.make("x@example.com").queue == "critical"
    with pytest.raises(ValueError, match="task send_welcome: timeout must be a finite number"):
        task.options(timeout=-1)
    with pytest.raises(TypeError, match=r"task send_welcome: .*unexpected keyword argument 'queu'"):
        task.options(queu="bulk")  # type: ignore[call-arg]


def test_declaring_refuses_keyword_only_parameters_and_twins() -> None:
    jobs = Tasks()
    with pytest.raises(TypeError, match="parameter 'lang' is keyword-only"):

        @jobs.task()
        def greet(email: str, *, lang: str = "en") -> None: ...

    @jobs.task()
    def ping() -> None: ...

    with pytest.raises(ValueError, match="'ping' is already declared"):
        jobs.task(name="ping")(lambda: None)


async def test_a_worker_runs_every_task_with_its_defaults(
    broker: App, nursery: trio.Nursery
) -> None:
    jobs = registry(url(broker))
    worker = jobs.worker(heartbeat=0.05)
    assert worker.queues == ("critical", "default")
    await nursery.start(worker.arun)
    send_welcome, resize = jobs.tasks["send_welcome"], jobs.tasks["resize"]
    async with AsyncClient(url(broker)) as client:
        first = await send_welcome.apush("ada@example.com", "Ada")
        second = await resize.apush("cat.png", 32)
        plain = await client.push("send_welcome", ["bob@example.com"], queue="critical")
        assert await client.result(first, timeout=10) == "Ada <ada@example.com>"
        assert await client.result(second, timeout=10) == [64]
        assert await client.result(plain, timeout=10) == "friend <bob@example.com>"

        def faktory_push() -> bool:  # a job from another client reaches the task too
            with faktory.connection(url(broker)) as other:
                return bool(other.queue("send_welcome", args=["fay@example.com"], jid="fay-0001"))

        assert await trio.to_thread.run_sync(faktory_push)
        assert await client.result("fay-0001", timeout=10) == "friend <fay@example.com>"
        later = await send_welcome.apush_at(timedelta(hours=1), "later@example.com")
        assert (await client.state(later)).state == "scheduled"
    worker.terminate()


def test_sync_and_asyncio_pushes(broker_process) -> None:  # type: ignore[no-untyped-def]
    process = broker_process()
    jobs = registry(process.url)
    send_welcome = jobs.tasks["send_welcome"]
    jid = send_welcome.push("ada@example.com")
    at = send_welcome.push_at(timedelta(minutes=5), "bob@example.com")

    async def from_asyncio() -> str:
        return await send_welcome.apush("eve@example.com")

    from_loops = [asyncio.run(from_asyncio()), trio.run(send_welcome.apush, "x@example.com")]
    from_loops.append(asyncio.run(from_asyncio()))  # a new loop gets a client of its own
    with Client(process.url) as client:
        states = [client.state(j) for j in (jid, at, *from_loops)]
    assert [(s.state, s.queue) for s in states] == [
        ("queued", "critical"),
        ("scheduled", "critical"),
    ] + [("queued", "critical")] * 3


def test_eager_mode_runs_inline_as_a_worker_would() -> None:
    jobs = Tasks(DEAD_URL, eager=True)
    seen: list[object] = []

    @jobs.task(queue="critical")
    def record(point: tuple[int, int]) -> None:
        seen.append((point, current_job().queue))

    @jobs.task()
    async def double(n: int) -> None:
        await trio.sleep(0)
        seen.append(n * 2)

    @jobs.task()
    def fail() -> None:
        raise RuntimeError("boom")

    jid = record.push((1, 2))
    assert len(jid) == 16
    double.push(21)  # an async task from sync code: run on a trio loop of its own
    assert seen == [([1, 2], "critical"), 42]  # the args went through JSON, like a worker's
    trio.run(double.apush, 4)
    assert seen[-1] == 8

    @jobs.task()
    async def triple(n: int) -> None:  # no trio inside: runs on asyncio's loop too
        seen.append(n * 3)

    asyncio.run(triple.apush(5))
    assert seen[-1] == 15
    with pytest.raises(RuntimeError, match="boom"):
        fail.push()
    with pytest.raises(LookupError):
        current_job()


def test_the_worker_command_loads_a_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLE)
    worker = load("shop.tasks:jobs")
    assert set(worker.functions) == {"send_welcome", "sign_up"}
    assert worker.queues == ("critical", "default")
    assert load("shop.tasks").functions.keys() == worker.functions.keys()


@pytest.mark.slow
def test_mypy_checks_pushes_against_the_function(tmp_path: Path) -> None:
    snippet = tmp_path / "app.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from hopper_client import Tasks

            jobs = Tasks()

            @jobs.task(queue="critical")
            def send_welcome(email: str, name: str = "friend") -> None: ...

            send_welcome.push("ada@example.com")
            send_welcome.push("ada@example.com", name="Ada")
            send_welcome.push(42)
            send_welcome.push_at("2030-01-01T00:00:00Z", "ada@example.com", "Ada", "extra")
            send_welcome.options(queue="bulk").push()
            """
        )
    )
    installed = tmp_path / "site"  # the client as installed: a folder named hopper_client
    installed.mkdir()
    (installed / "hopper_client").symlink_to(Path(hopper_client.__file__).parent)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(snippet)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"MYPYPATH": str(installed), "PATH": ""},
        timeout=300,
    )
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["11", "12", "13"], done.stdout
    assert 'incompatible type "int"; expected "str"' in errors[0]
    assert "Too many arguments" in errors[1]
    assert 'Missing positional argument "email"' in errors[2]
