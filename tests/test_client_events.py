"""Client.events() and AsyncClient.events(): the event stream as an iterator, filters, and a
stream that reconnects after its broker restarts (it says it missed events)."""

from collections.abc import Callable

import pytest
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient, Client, JobEvent
from tests.conftest import BrokerProcess
from tests.test_client import in_thread, url

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def test_the_sync_stream_sees_a_job_from_push_to_done(broker: App) -> None:
    def watch() -> list[JobEvent]:
        with Client(url(broker)) as client, client.events(queues=["ev"]) as stream:
            jid = client.push("work", [1], queue="ev")
            client.push("work", [2], queue="other")
            job = client.fetch("ev")
            assert job is not None and job.jid == jid
            client.ack(jid)
            return [next(stream) for _ in range(3)]

    seen = await in_thread(watch)
    assert [e.event for e in seen] == ["pushed", "fetched", "done"]
    assert {e.queue for e in seen} == {"ev"} and seen[0].jobtype == "work"


async def test_the_async_stream_filters_by_event(broker: App) -> None:
    async with AsyncClient(url(broker)) as client:
        async with client.events(events=["done", "failed"]) as stream:
            first = await client.push("work", [])
            second = await client.push("work", [])
            for _ in range(2):
                job = await client.fetch()
                assert job is not None
                if job.jid == first:
                    await client.fail(job.jid, "Boom", "no")
                else:
                    await client.ack(job.jid)
            with trio.fail_after(10):
                seen = [await stream.__anext__() for _ in range(2)]
        assert {(e.event, e.jid) for e in seen} == {("failed", first), ("done", second)}
        assert [e.errtype for e in seen if e.event == "failed"] == ["Boom"]


def test_a_stream_reconnects_and_says_it_missed_events(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    broker = broker_process()
    with Client(broker.url, retry_for=20) as client, client.events() as stream:
        client.push("work", [])
        assert next(stream).event == "pushed"
        broker.kill()
        broker.start()
        assert next(stream).event == "missed"
        client.push("work", [])
        assert next(stream).event == "pushed"
