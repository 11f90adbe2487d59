"""The blocking Client against a real broker: every command, round trips, errors, pool."""

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hopper_broker.app import App
from hopper_broker.store.keys import QueueKeys
from hopper_client import Client, Job, ServerError, make_job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

UNICODE = 'héllo wörld ✓ 🚀 日本語 \u0000 \n "quoted" \\ back'
NESTED = {"a": [1, 2.5, None, True, {"b": ["c", {"d": []}]}], "e": {}, "ü": -(2**63)}
LARGE = "x" * 1_000_000
ARGS = [
    [],
    [1, "two", 3.0, None, False],
    [UNICODE],
    [NESTED, [NESTED, NESTED]],
    [LARGE],
]

DEFAULT = QueueKeys("default")


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


@pytest.mark.parametrize("args", ARGS, ids=["empty", "scalars", "unicode", "nested", "large"])
async def test_push_fetch_ack_round_trip(broker: App, args: list[Any]) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            jid = client.push("work", args, custom={"trace": UNICODE})
            job = client.fetch()
            assert job is not None
            assert (job.jid, job.jobtype, job.args, job.queue) == (jid, "work", args, "default")
            assert job.custom == {"trace": UNICODE}
            client.ack(jid)

    await in_thread(work)


async def test_job_options_reach_the_broker(broker: App, rdb: redis.Redis) -> None:
    def work() -> Job:
        with Client(url(broker)) as client:
            client.push("work", [1], queue="critical", retry=3, reserve_for=120, jid="my-jid-0001")
            job = client.fetch("critical")
            assert job is not None
            return job

    job = await in_thread(work)
    assert (job.jid, job.queue, job.retry, job.reserve_for) == ("my-jid-0001", "critical", 3, 120)
    assert len(job.jid) >= 8


async def test_scheduled_job_waits_in_the_scheduled_set(broker: App, rdb: redis.Redis) -> None:
    when = datetime.now(UTC) + timedelta(seconds=1)

    def work() -> tuple[str, str]:
        with Client(url(broker)) as client:
            first = client.push("later", at=when)
            second = client.push("later", at=timedelta(hours=1))
            return first, second

    first, second = await in_thread(work)
    assert rdb.zscore(DEFAULT.scheduled, first) == pytest.approx(when.timestamp())
    assert rdb.zscore(DEFAULT.scheduled, second) is not None


async def test_push_bulk_reports_refused_jids(broker: App) -> None:
    def work() -> tuple[dict[str, str], list[str]]:
        with Client(url(broker)) as client:
            taken = client.push("work", jid="taken-jid-1")
            jobs = [make_job("work", [n]) for n in range(50)]
            errors = client.push_bulk([*jobs, make_job("work", jid=taken), make_job("", [])])
            fetched = [client.fetch() for _ in range(51)]
            return errors, [job.jid for job in fetched if job is not None]

    errors, fetched = await in_thread(work)
    assert errors["taken-jid-1"] == "jid taken-jid-1 is already in use"
    assert len(errors) == 2 and any("jobtype" in text for text in errors.values())
    assert len(fetched) == 51


async def test_pipeline_confirms_every_push_and_reports_refusals_per_jid(
    broker: App, rdb: redis.Redis
) -> None:
    def work() -> tuple[list[str], dict[str, str], dict[str, str]]:
        with Client(url(broker), max_idle=1) as client:
            with client.pipeline() as pipe:  # more than a write's and a window's worth
                jids = [pipe.push("work", [n], jid=f"piped-{n:04}") for n in range(450)]
                pipe.push("work", jid="piped-0007")
                pipe.push("work", queue="bad queue!", jid="bad-queue-1")
                jids.append(pipe.push("work", custom={"last": True}))
            bulk = [make_job("work", [n], queue="bulk") for n in range(2500)]
            twin = make_job("work", queue="bulk", jid=bulk[1234].jid)
            refused = client.push_bulk([*bulk, twin])
            assert client.fetch("empty-queue") is None  # the pooled connection is in sync
            return jids, pipe.refused, refused

    jids, refused, bulk_refused = await in_thread(work)
    assert refused.keys() == {"piped-0007", "bad-queue-1"}
    assert refused["piped-0007"] == "jid piped-0007 is already in use"
    assert "queue names must match" in refused["bad-queue-1"]
    assert sorted(rdb.lrange(DEFAULT.queue, 0, -1)) == sorted(jids)
    assert list(bulk_refused.values()) == [f"jid {next(iter(bulk_refused))} is already in use"]
    assert rdb.llen(QueueKeys("bulk").queue) == 2500


async def test_error_replies_raise_server_error_and_keep_the_connection(broker: App) -> None:
    def work() -> None:
        with Client(url(broker), max_idle=1) as client:
            client.push("work", jid="dup-jid-01")
            with pytest.raises(ServerError) as refused:
                client.push("work", jid="dup-jid-01")
            assert (refused.value.code, refused.value.message) == (
                "ERR",
                "jid dup-jid-01 is already in use",
            )
            with pytest.raises(ServerError, match="Job not found nope-nope"):
                client.fail("nope-nope", "Oops", "no such job")
            client.ack("nope-nope")  # an unknown jid is fine to ACK
            with pytest.raises(ServerError, match="queue names must match"):
                client.push("work", queue="bad queue!")
            assert client.fetch() is not None  # same pooled connection, still in sync

    await in_thread(work)


async def test_queue_commands_info_and_flush(broker: App) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            client.push("work", queue="q1")
            client.push("work", queue="q2")
            client.pause("q1")
            assert client.fetch("q1", "q2").queue == "q2"  # type: ignore[union-attr]
            client.resume("q1")
            latency = client.latency("q1", "q2")
            assert set(latency) == {"q1", "q2"} and latency["q1"] >= 0
            assert client.info()["faktory"]["queues"]["q1"] == 1
            client.remove_queues("q1")
            assert client.info()["faktory"]["queues"].get("q1", 0) == 0
            client.flush()
            assert client.info()["faktory"]["total_enqueued"] == 0

    await in_thread(work)


async def test_mutate_moves_retries_without_listing_them(broker: App, rdb: redis.Redis) -> None:
    def work() -> None:
        with Client(url(broker)) as client:
            jids = [client.push("work", [n]) for n in range(3)]
            for _ in jids:
                job = client.fetch()
                assert job is not None
                client.fail(job.jid, "Boom", "failed")
            client.mutate("kill", "retries", jids=[jids[0]])
            client.mutate("requeue", "retries", jobtype="work")

    await in_thread(work)
    assert rdb.zcard(DEFAULT.dead) == 1
    assert rdb.zcard(DEFAULT.retries) == 0
    assert rdb.llen(DEFAULT.queue) == 2


async def test_one_client_shared_by_threads(broker: App, rdb: redis.Redis) -> None:
    client = Client(url(broker))
    jids: list[str] = []

    def producer() -> None:
        jids.extend(client.push("work", [n]) for n in range(25))

    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(in_thread, producer)
    client.close()
    assert len(set(jids)) == 200 and rdb.llen(DEFAULT.queue) == 200


def test_forked_child_does_not_share_pooled_sockets(broker_process: Any) -> None:
    hopper = broker_process()
    client = Client(hopper.url)
    client.push("work")  # on the connection the threads share
    client.info()  # on a pooled one
    assert len(client._idle) == 1 and client._shared is not None
    pid = os.fork()
    if pid == 0:  # the child: its inherited sockets must be dropped, then it works on its own
        try:
            inherited = client._idle or client._shared
            os._exit(0 if not inherited and client.push("work") else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.info()["faktory"]["queues"]["default"] == 2  # the parent's socket still works
    client.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip


def test_any_json_args_round_trip(broker_process: Any) -> None:
    with Client(broker_process().url) as client:

        @settings(max_examples=60, deadline=None)
        @given(args=st.lists(json_values, max_size=5))
        def round_trip(args: list[Any]) -> None:
            jid = client.push("work", args, queue="prop")
            job = client.fetch("prop")
            assert job is not None and job.jid == jid and job.args == args
            client.ack(jid)

        round_trip()
