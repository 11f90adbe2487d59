"""Batches through the client (sync and async) against a real broker: BATCH NEW on entering,
custom.bid on every push (single, bulk, pipelined), COMMIT on a clean exit only, reopening,
child batches, status, and what a running job and a callback learn inside a Worker."""

import asyncio
from typing import Any

import pytest
import trio

from hopper_broker.app import App
from hopper_client import (
    AsyncBatch,
    AsyncClient,
    Batch,
    BatchNotOpen,
    BatchStatus,
    Client,
    Job,
    ServerError,
    Worker,
    batch_id,
    callback_bid,
    callback_parent_bid,
    current_job,
    make_job,
)
from tests.conftest import eventually

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


def callbacks(tag: str = "") -> dict[str, Job]:
    return {
        "complete": make_job(f"Complete{tag}", ["c"], queue="cbs"),
        "success": make_job(f"Success{tag}", ["s"], queue="cbs"),
    }


def run_all(client: Client, queue: str = "default") -> list[Job]:
    """Fetch and ACK every job waiting in `queue`."""
    done = []
    while (job := client.fetch(queue)) is not None:
        client.ack(job.jid)
        done.append(job)
    return done


def run_one(client: Client, queue: str) -> Job:
    """Fetch the next job of `queue` and ACK it."""
    job = client.fetch(queue)
    assert job is not None, f"nothing in {queue}"
    client.ack(job.jid)
    return job


def states(status: BatchStatus) -> tuple[str, str]:
    return status.complete_st, status.success_st


async def test_sync_batch_pushes_commits_and_fires_callbacks(broker: App) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            with client.batch(description="import", **callbacks()) as batch:
                assert isinstance(batch, Batch) and batch.bid.startswith("b-")
                first = batch.push("row", [1])
                second = batch.push_job(make_job("row", [2], custom={"k": "v"}))
                assert batch.push_bulk([make_job("row", [n]) for n in (3, 4)]) == {}
                with batch.pipeline() as pipe:
                    pipe.push("row", [5])
                    pipe.push_job(make_job("row", [6]))
                assert pipe.refused == {}
                assert not batch.committed
                client.push("outside", [0])  # not through the batch: not in it
            assert batch.committed
            bid = batch.bid
            status = client.batch_status(bid)
            assert isinstance(status, BatchStatus)
            assert (status.bid, status.description, status.parent_bid) == (bid, "import", None)
            assert (status.total, status.pending, status.failed) == (6, 6, 0)
            assert states(status) == ("", "") and status.created_at.endswith("Z")

            jobs = run_all(client)
            members = {job.jid: job for job in jobs if job.jobtype == "row"}
            assert first in members and second in members and len(members) == 6
            assert all(batch_id(job) == bid for job in members.values())
            assert members[second].custom == {"k": "v", "bid": bid}
            outside = [job for job in jobs if job.jobtype == "outside"]
            assert batch_id(outside[0]) is None
            assert states(batch.status()) == ("1", "")
            complete = run_one(client, "cbs")
            assert complete.jobtype == "Complete" and complete.custom == {"_bid": bid}
            assert (callback_bid(complete), callback_parent_bid(complete)) == (bid, None)
            assert batch_id(complete) is None  # callbacks carry _bid, not bid
            assert states(client.batch_status(bid)) == ("2", "1")
            success = run_one(client, "cbs")
            assert success.jobtype == "Success" and callback_bid(success) == bid
            status = client.batch_status(bid)
            assert (status.pending, states(status)) == (0, ("2", "2"))

    await in_thread(work)


async def test_an_exception_leaves_the_batch_uncommitted(broker: App) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            batch = client.batch(success=make_job("Success", queue="cbs"))
            with pytest.raises(RuntimeError, match="midway"), batch:
                batch.push("row", [1])
                raise RuntimeError("midway")
            assert not batch.committed
            run_all(client)
            status = batch.status()
            assert (status.total, status.pending, states(status)) == (1, 0, ("", ""))
            assert client.fetch("cbs") is None  # never committed: no callback

            with client.open_batch(batch.bid) as again:  # BATCH OPEN, then COMMIT
                assert again.bid == batch.bid
            assert states(batch.status()) == ("", "1")
            assert [job.jobtype for job in run_all(client, "cbs")] == ["Success"]

    await in_thread(work)


async def test_guards_reopening_and_errors(broker: App) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            with pytest.raises(ValueError, match="callback"):
                client.batch(description="nothing to call")
            batch = client.batch(complete=make_job("Complete", queue="cbs"))
            with pytest.raises(BatchNotOpen):
                batch.push("row")
            with pytest.raises(BatchNotOpen):
                _ = batch.bid
            batch.open()
            batch.push("row", [1])
            batch.commit()
            with pytest.raises(BatchNotOpen, match="committed"):
                batch.push("row", [2])
            with pytest.raises(BatchNotOpen):
                batch.commit()
            with batch:  # entering a committed batch reopens it (BATCH OPEN)
                batch.push("row", [2])
            assert batch.committed and batch.status().total == 2

            ghost = "b-AAAAAAAAAAAAAA"
            with (
                pytest.raises(ServerError, match=f"No such batch {ghost}"),
                client.open_batch(ghost),
            ):
                pass
            with pytest.raises(ServerError, match="No such batch"):
                client.batch_status(ghost)
            with pytest.raises(ServerError, match="No such batch"):
                client.batch(success=make_job("S"), parent_bid=ghost).open()
            with pytest.raises(ValueError, match="not a batch id"):
                client.batch_status("two words")

    await in_thread(work)


async def test_child_batches_hold_their_parent_back(broker: App) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            with client.batch(description="parent", **callbacks("P")) as parent:
                parent.push("top", [1], queue="top")
                with parent.batch(description="child", **callbacks("C")) as child:
                    child.push("low", [1], queue="low")
                    child.push("low", [2], queue="low")
            with client.batch(success=make_job("SuccessD", queue="cbs"), parent_bid=child.bid):
                pass  # an empty grandchild, by parent_bid: its callback fires at once

            status = child.status()
            assert (status.parent_bid, status.description, status.total) == (
                parent.bid,
                "child",
                2,
            )
            assert parent.status().total == 1  # the child's jobs count in the child only
            grandchild_cb = run_one(client, "cbs")
            assert grandchild_cb.jobtype == "SuccessD"
            assert callback_parent_bid(grandchild_cb) == child.bid

            run_all(client, "top")
            assert states(parent.status()) == ("", "")  # waits for the child
            run_all(client, "low")
            child_complete = run_one(client, "cbs")
            assert child_complete.jobtype == "CompleteC"
            assert child_complete.custom == {"_bid": child.bid, "_pbid": parent.bid}
            assert states(parent.status()) == ("1", "")  # the child's complete stage is over
            fired = [job.jobtype for job in run_all(client, "cbs")]
            assert sorted(fired[:2]) == ["CompleteP", "SuccessC"] and fired[2:] == ["SuccessP"]
            assert states(parent.status()) == ("2", "2")

    await in_thread(work)


async def batch_flow(client: AsyncClient) -> dict[str, Any]:
    """The async surface once; runs unchanged on trio and on asyncio."""
    async with client.batch(description="aio", **callbacks()) as batch:
        assert isinstance(batch, AsyncBatch)
        await batch.push("row", [1], queue="aio")
        assert await batch.push_bulk([make_job("row", [2], queue="aio")]) == {}
        async with batch.pipeline() as pipe:
            await pipe.push("row", [3], queue="aio")
        async with batch.batch(success=make_job("ChildSuccess", queue="aio-cbs")) as child:
            await child.push("row", [4], queue="aio")
    with pytest.raises(KeyError):
        async with client.batch(success=make_job("Never", queue="aio-cbs")) as dropped:
            await dropped.push("row", [5], queue="aio")
            raise KeyError("no commit")
    while (job := await client.fetch("aio")) is not None:
        await client.ack(job.jid)
    fired = []
    while (job := await client.fetch("aio-cbs", "cbs")) is not None:
        fired.append(job.jobtype)
        await client.ack(job.jid)
    assert (await client.batch_status(dropped.bid)).success_st == ""  # never committed
    opened = await client.open_batch(dropped.bid).open()
    await opened.commit()
    return {
        "status": await client.batch_status(batch.bid),
        "child": await child.status(),
        "dropped": await client.batch_status(dropped.bid),
        "fired": fired,
        "after_commit": (await client.fetch("aio-cbs")),
    }


def check_flow(result: dict[str, Any]) -> None:
    status, child, dropped = result["status"], result["child"], result["dropped"]
    assert (status.total, status.pending, states(status)) == (3, 0, ("2", "2"))
    assert (child.total, child.parent_bid, states(child)) == (1, status.bid, ("", "2"))
    assert (dropped.total, dropped.pending, states(dropped)) == (1, 0, ("", "1"))
    assert result["fired"] == ["ChildSuccess", "Complete", "Success"]
    late = result["after_commit"]
    assert late is not None and late.jobtype == "Never" and callback_bid(late) == dropped.bid


async def test_async_batches_on_trio(broker: App) -> None:
    async with AsyncClient(url(broker)) as client:
        check_flow(await batch_flow(client))


async def test_async_batches_on_asyncio(broker: App) -> None:
    async def main() -> dict[str, Any]:
        async with AsyncClient(url(broker)) as client:
            return await batch_flow(client)

    check_flow(await trio.to_thread.run_sync(asyncio.run, main()))


async def test_worker_jobs_learn_their_batch_and_callbacks_theirs(
    broker: App, nursery: trio.Nursery
) -> None:
    seen: dict[str, Any] = {}
    worker = Worker(url(broker), queues=["default", "cbs"], concurrency=4, heartbeat=0.05)
    assert (batch_id(), callback_bid(), callback_parent_bid()) == (None, None, None)

    @worker.job()
    def member(n: int) -> None:  # a sync job (in a thread)
        seen[f"member{n}"] = batch_id()

    @worker.job()
    async def grow() -> None:  # a job of the batch reopens it and adds a job
        bid = batch_id()
        assert bid is not None
        seen["grow"] = bid
        async with AsyncClient(url(broker)) as client, client.open_batch(bid) as batch:
            await batch.push("member", [3])

    @worker.job("Done")
    async def done(kind: str) -> None:
        seen[current_job().jobtype] = (callback_bid(), callback_parent_bid(), batch_id())

    worker.register(
        "Child", lambda: seen.setdefault("Child", (callback_bid(), callback_parent_bid()))
    )
    await nursery.start(worker.arun)
    async with AsyncClient(url(broker)) as client:
        async with client.batch(success=make_job("Done", ["s"], queue="cbs")) as batch:
            await batch.push("member", [1])
            await batch.push("grow")
            async with batch.batch(complete=make_job("Child", queue="cbs")) as child:
                await child.push("member", [2])
        await eventually(lambda: "Done" in seen)

        async def callback_acked() -> BatchStatus | None:  # the job ran; its ACK may follow
            status = await batch.status()
            return status if status.success_st == "2" else None

        status = await eventually(callback_acked)
    worker.terminate()
    assert seen["member1"] == seen["grow"] == seen["member3"] == batch.bid
    assert seen["member2"] == child.bid
    assert seen["Child"] == (child.bid, batch.bid)
    assert seen["Done"] == (batch.bid, None, None)
    assert (status.total, status.pending, states(status)) == (3, 0, ("", "2"))
