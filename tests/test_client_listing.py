"""list_jobs (JOB LIST) in both clients: pages, filters and the cursor walk."""

from datetime import timedelta

import pytest
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient, Client, JobPage, ServerError

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def test_async_pages_and_filters(broker: App) -> None:
    async with AsyncClient(url(broker)) as client:
        for i in range(30):
            await client.push(
                "Mail" if i % 3 else "Report",
                [i],
                queue="mail" if i % 2 else "default",
                at=timedelta(hours=1, seconds=i),
                jid=f"jid-{i:05d}",
            )
        walked: list[str] = []
        cursor: str | None = ""
        for _ in range(10):
            page = await client.list_jobs("scheduled", limit=7, cursor=cursor)
            assert len(page.jobs) <= 7
            walked += [entry.jid for entry in page.jobs]
            cursor = page.cursor
            if cursor is None:
                break
        assert walked == [f"jid-{i:05d}" for i in range(30)]
        reports = await client.list_jobs("scheduled", jobtype="Report", queues=["default"])
        assert [entry.job.args for entry in reports.jobs] == [[0], [6], [12], [18], [24]]
        assert all(entry.queue == "default" for entry in reports.jobs)
        newest = await client.list_jobs("scheduled", order="desc", limit=2)
        assert [entry.jid for entry in newest.jobs] == ["jid-00029", "jid-00028"]
        with pytest.raises(ServerError, match="target must be one of"):
            await client.list_jobs("nowhere", limit=1)  # type: ignore[arg-type]
    async with AsyncClient(url(broker), wid="w-async") as worker:
        assert await worker.beat() == "running"
        async with AsyncClient(url(broker)) as admin:
            assert await admin.signal_worker("w-async", "quiet") == "quiet"
            with pytest.raises(ServerError, match="unknown worker w-other"):
                await admin.signal_worker("w-other", "terminate")
        assert await worker.beat() == "quiet"


async def test_sync_client(broker: App) -> None:
    def run() -> JobPage:
        with Client(url(broker)) as client:
            client.push("Mail", [], at=timedelta(hours=1), jid="sync-job-1")
            return client.list_jobs("scheduled")

    page = await trio.to_thread.run_sync(run)
    assert [entry.jid for entry in page.jobs] == ["sync-job-1"] and page.cursor is None
    assert page.jobs[0].job.jobtype == "Mail" and page.scanned == 1
