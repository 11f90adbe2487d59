"""The event stream (EVENTS): every transition of jobs across two brokers, in order per job;
filters; a slow subscriber told what it missed; the stream ending on END."""

import json
from collections import defaultdict
from typing import Any

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.events import EventHub, Filter, Subscription
from hopper_broker.store.address import Address
from hopper_broker.store.keys import EVENTS_CHANNEL
from tests.conftest import StartBroker, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def subscribe(port: int, wanted: dict[str, Any] | None = None) -> Wire:
    w = await Wire.open(port, hello={})
    assert await w.call("EVENTS", wanted if wanted is not None else "") == b"OK"
    return w


async def events(w: Wire, count: int) -> list[dict[str, Any]]:
    with trio.fail_after(30):
        return [json.loads(await w.reply()) for _ in range(count)]


async def test_every_transition_of_1000_jobs_across_two_brokers(
    start_broker: StartBroker,
) -> None:
    first, second = await start_broker(), await start_broker()
    listener = await subscribe(first.port, {"queues": ["stream"]})
    producer = await Wire.open(second.port, hello={})
    workers = [await Wire.open(b.port, hello={"wid": f"w-{b.port}"}) for b in (first, second)]
    jids = [f"stream-{i:04d}" for i in range(1000)]
    for start in range(0, len(jids), 100):
        batch = [job(jid, queue="stream", retry=0) for jid in jids[start : start + 100]]
        assert await producer.call("PUSHB", batch) == b"{}"
    await producer.call("PUSH", job("elsewhere", queue="other"))  # filtered out
    for i in range(len(jids)):
        worker = workers[i % 2]
        fetched = json.loads(await worker.call("FETCH", "stream"))
        if i % 10:
            await worker.call("ACK", {"jid": fetched["jid"], "result": i})
        else:
            await worker.call("FAIL", {"jid": fetched["jid"], "errtype": "Boom"})
    seen: dict[str, list[str]] = defaultdict(list)
    results = {}
    for event in await events(listener, 3 * len(jids)):
        assert event["queue"] == "stream" and event["jobtype"] == "work" and event["at"] > 0
        seen[event["jid"]].append(event["event"])
        if event["event"] == "done":
            results[event["jid"]] = event["result"]
    for jid in jids:
        ended = "done" if int(jid[-4:]) % 10 else "discarded"
        assert seen[jid] == ["pushed", "fetched", ended], jid
    assert results["stream-0001"] == 1


async def test_filters_pick_events(broker: App) -> None:
    by_jid = await subscribe(broker.port, {"jids": ["wanted-01"]})
    by_type = await subscribe(broker.port, {"jobtypes": ["mail"], "events": ["done", "failed"]})
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("wanted-01", custom={"track": 1}))
    await w.call("PUSH", job("mailer-01", "mail"))
    await w.call("PUSH", job("mailer-02", "mail", at="2099-01-01T00:00:00Z"))
    for _ in range(2):
        fetched = json.loads(await w.call("FETCH", "default"))
        if fetched["jid"] == "wanted-01":
            await w.call("TRACK", 'SET {"jid":"wanted-01","percent":50}')
            await w.call("ACK", {"jid": "wanted-01"})
        else:
            await w.call("FAIL", {"jid": "mailer-01", "errtype": "Bounce"})
    await w.call("JOB", "CANCEL mailer-02")
    assert [e["event"] for e in await events(by_jid, 4)] == [
        "pushed",
        "fetched",
        "progress",
        "done",
    ]
    failed = (await events(by_type, 1))[0]
    assert failed["event"] == "failed" and failed["errtype"] == "Bounce" and failed["run_at"]


async def test_cancel_and_snooze_and_scheduled_events(broker: App) -> None:
    listener = await subscribe(broker.port)
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("snoozy-01"))
    await w.call("FETCH", "default")
    await w.call("JOB", "SNOOZE snoozy-01 3600")
    await w.call("JOB", "CANCEL snoozy-01")
    names = [e["event"] for e in await events(listener, 4)]
    assert names == ["pushed", "fetched", "snoozed", "cancelled"]


async def test_bad_filters_are_refused(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match="invalid EVENTS filter"):
        await w.call("EVENTS", '{"queue":["a"]}')
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match="at most 1000 jids"):
        await w.call("EVENTS", {"jids": [f"j{i}" for i in range(1001)]})


async def test_the_stream_ends_on_end(broker: App) -> None:
    w = await subscribe(broker.port)
    await w.send(b"END\r\n")
    assert await w.closed()
    # with no subscriber left, the broker stops listening (and the scripts stop publishing)
    assert not broker.server.events.subscriptions  # type: ignore[union-attr]


def test_a_slow_subscriber_is_told_what_it_missed() -> None:
    subscription = Subscription(Filter(), size=3)
    for i in range(5):
        subscription.offer(b'{"event":"pushed","n":%d}' % i)
    assert list(subscription.lines) == [b'{"event":"pushed","n":%d}' % i for i in range(3)]
    subscription.lines.clear()
    subscription.offer(b'{"event":"done"}')
    assert list(subscription.lines) == [b'{"event":"missed","count":2}', b'{"event":"done"}']
    subscription.lost_track()
    subscription.offer(b'{"event":"x"}')
    assert list(subscription.lines)[-2:] == [b'{"event":"missed"}', b'{"event":"x"}']


@pytest.mark.parametrize("store_mode", ["one"], indirect=True)
async def test_a_lost_event_stream_is_logged_as_lost_and_heard_again(
    nursery: trio.Nursery, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis dropping the listening connection is a warning, not a bug's traceback, and the
    broker listens again."""
    address = Address(redis_url)
    hub = EventHub(lambda: address, lambda: [address], lambda: 100, lambda: 5.0)
    await nursery.start(hub.run)
    db = redis.Redis.from_url(redis_url)
    async with hub.subscribe(b""):
        db.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await eventually(lambda: db.pubsub_numsub(EVENTS_CHANNEL)[0][1] == 1)  # heard again
    db.close()
    messages = [record.getMessage() for record in caplog.records]
    assert any("event stream lost" in m for m in messages), messages
    assert not any("failed" in m for m in messages), messages
