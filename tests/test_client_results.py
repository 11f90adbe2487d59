"""The bundled client and Worker with jobs by jid: a job function's return value is its result,
`result()` waits for it (sync and async), `state()`, `track()` and `log()`."""

import datetime
from typing import Any

import pytest
import trio

from hopper_broker.app import App
from hopper_client import (
    AsyncClient,
    Client,
    JobFailed,
    ResultTimeout,
    UnknownJob,
    Worker,
    current_job,
)

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def test_return_values_are_results(broker: App, nursery: trio.Nursery) -> None:
    worker = Worker(url(broker), concurrency=4, heartbeat=0.05)

    @worker.job()
    def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    @worker.job()
    async def shout(text: str) -> str:
        return text.upper()

    @worker.job()
    def nothing() -> None:
        return None

    @worker.job()
    def unencodable() -> Any:
        return object()  # not JSON: the job is still done, without a result

    @worker.job()
    def broken() -> None:
        raise ValueError("no luck")

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jids = {
            "add": await client.push("add", [2, 3]),
            "shout": await client.push("shout", ["hi"]),
            "nothing": await client.push("nothing"),
            "unencodable": await client.push("unencodable"),
            "broken": await client.push("broken", retry=0),
        }
        with trio.fail_after(10):
            assert await client.result(jids["add"]) == {"sum": 5}
            assert await client.result(jids["shout"], timeout=5) == "HI"
            assert await client.result(jids["nothing"]) is None
            assert await client.result(jids["unencodable"]) is None
            with pytest.raises(JobFailed, match="discarded: ValueError: no luck") as failed:
                await client.result(jids["broken"])
        assert failed.value.state.failure is not None
        state = await client.state(jids["add"])
        assert state.state == "done" and state.attempts == 1 and state.jobtype == "add"
        with pytest.raises(UnknownJob):
            await client.result("nope-nope")
    worker.terminate()


async def test_result_times_out_and_state_tells_where_a_job_is(broker: App) -> None:
    def use() -> None:  # the sync Client, in a thread
        with Client(url(broker), timeout=1.0) as client:
            jid = client.push("nobody-runs-this", queue="idle")
            with pytest.raises(ResultTimeout):
                client.result(jid, timeout=1.2)  # longer than one reply timeout: waits in steps
            assert client.state(jid).state == "queued"
            later = client.push("later", at=datetime.timedelta(hours=1))
            assert client.state(later).state == "scheduled" and client.state(later).at

    with trio.fail_after(10):
        await trio.to_thread.run_sync(use)


async def test_progress_and_log_from_inside_a_job(broker: App, nursery: trio.Nursery) -> None:
    worker = Worker(url(broker), concurrency=1, heartbeat=0.05)

    @worker.job()
    async def chatty() -> int:
        jid = current_job().jid
        async with AsyncClient(url(broker)) as client:
            await client.track(jid, 40, "halfway", reserve_until=datetime.timedelta(hours=2))
            await client.log(jid, "read the input")
            await client.log(jid, "wrote the output")
        return 42

    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        jid = await client.push("chatty", custom={"track": 1})
        with trio.fail_after(10):
            assert await client.result(jid) == 42
        state = await client.state(jid)
        assert state.progress is not None
        assert (state.progress.percent, state.progress.desc) == (40, "halfway")
        assert state.progress.log == ["read the input", "wrote the output"]
    worker.terminate()
