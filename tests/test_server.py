"""The server over real sockets: handshake, commands, errors, limits, shutdown."""

import json

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.errors import Halt
from hopper_broker.middleware import Chains, Context, Next
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from tests.conftest import StartBroker, eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def test_greeting_and_handshake(broker: App) -> None:
    w = await Wire.open(broker.port)
    assert await w.call("HELLO", {"v": 2, "hostname": "h"}) == b"OK"
    assert await w.call("PUSH", job("jid-0001")) == b"OK"


@pytest.mark.parametrize(
    "first",
    [b"PUSH {}\r\n", b"HELLO nope\r\n", b"HELLO {bad json\r\n", b"\x16\x03\x01\x02\x00\r\n"],
)
async def test_anything_but_hello_closes_silently(broker: App, first: bytes) -> None:
    w = await Wire.open(broker.port)
    await w.send(first)
    with pytest.raises(EOFError):
        await w.reply()


async def test_handshake_deadline(start_broker: StartBroker) -> None:
    app = await start_broker(handshake_timeout=0.2)
    w = await Wire.open(app.port)
    with trio.fail_after(5):
        assert await w.closed()


async def test_password(start_broker: StartBroker) -> None:
    app = await start_broker(password="s3cret")
    w = await Wire.open(app.port, hello={"wid": "w1"}, password="s3cret")
    assert await w.call("INFO")
    bad = await Wire.open(app.port)
    with pytest.raises(WireError, match="ERR Invalid password"):
        await bad.call("HELLO", {"v": 2, "pwdhash": "0" * 64})
    with pytest.raises(EOFError):
        await bad.reply()


async def test_push_fetch_ack_fail_round_trip(broker: App, rdb: redis.Redis) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    args = [1, "ünïcode ✓", {"nested": [1, {"x": None}]}, "x" * 100_000]
    assert await w.call("PUSH", job("jid-0001", args=args, custom={"k": 1})) == b"OK"
    assert await w.call("PUSH", job("jid-0002")) == b"OK"
    fetched = json.loads(await w.call("FETCH", "default"))
    assert fetched["args"] == args and fetched["custom"] == {"k": 1}
    assert await w.call("ACK", {"jid": "jid-0001"}) == b"OK"
    assert json.loads(await w.call("FETCH", "default"))["jid"] == "jid-0002"
    fail = {"jid": "jid-0002", "errtype": "E", "message": "m", "backtrace": ["l1"]}
    assert await w.call("FAIL", fail) == b"OK"
    assert rdb.zcard(QueueKeys("default").retries) == 1
    assert await w.call("FETCH", "default") is None


async def test_ack_from_another_connection(broker: App) -> None:
    a = await Wire.open(broker.port, hello={"wid": "w1"})
    b = await Wire.open(broker.port, hello={"wid": "w1"})
    await a.call("PUSH", job("jid-0001"))
    assert json.loads(await a.call("FETCH", "default"))["jid"] == "jid-0001"
    assert await b.call("ACK", {"jid": "jid-0001"}) == b"OK"
    info = json.loads(await b.call("INFO"))
    assert info["faktory"]["total_processed"] == 1


@pytest.mark.parametrize(
    ("verb", "arg", "message"),
    [
        ("PUSH", "{", "ERR invalid JSON"),
        (
            "PUSH",
            '{"jid":"1234567","jobtype":"a","args":[]}',
            "ERR jobs must have a reasonable jid",
        ),
        (
            "PUSH",
            '{"jid":"12345678","jobtype":"a","args":[],"queue":"a b"}',
            'ERR cannot get "a b"',
        ),
        ("ACK", "nope", "ERR invalid ACK nope"),
        ("ACK", None, "ERR invalid ACK"),
        ("FAIL", "[]", "ERR invalid FAIL []"),
        ("FAIL", '{"jid":""}', "ERR missing JID"),
        ("FAIL", '{"jid":"nope-nope"}', "ERR Job not found nope-nope"),
        ("BEAT", "x", "ERR invalid BEAT x"),
        ("BEAT", '{"wid":"ghost"}', "ERR unknown worker ghost"),
        ("FETCH", None, "ERR must call fetch with at least one queue"),
        ("QUEUE", "EXPLODE x", "ERR no such QUEUE subcommand: EXPLODE"),
        ("QUEUE", "LATENCY *", "ERR QUEUE LATENCY does not support wildcards"),
        ("MUTATE", '{"cmd":"kill","target":"working"}', "ERR invalid target for mutation command"),
        ("MUTATE", '{"cmd":"x","target":"dead"}', "ERR unknown mutate operation"),
        ("MUTATE", "{", "ERR "),
        ("BATCH", "NEW {}", "ERR BATCH NEW needs a success or complete callback job"),
        ("BATCH", "STATUS b-nope", "ERR No such batch b-nope"),
        ("TRACK", "EXPLODE", "ERR TRACK needs SET <json> or GET <jid>"),
        ("TRACK", "SET {", "ERR invalid TRACK SET {"),
        ("TRACK", 'SET {"jid":""}', "ERR TRACK SET needs a jid"),
        ("TRACK", 'SET {"jid":"j-000001","reserve_until":"soon"}', "ERR invalid reserve_until"),
        ("JOB", "STATE", "ERR JOB needs STATE <jid>, WAIT <jid> [seconds], CANCEL <jid>, SNOOZE"),
        ("JOB", "CANCEL", "ERR JOB needs STATE <jid>"),
        ("JOB", "SNOOZE j-000001", "ERR JOB needs STATE <jid>"),
        ("JOB", "SNOOZE j-000001 later", "ERR JOB SNOOZE: not a number of seconds: later"),
        ("JOB", "SNOOZE j-000001 nan", "ERR JOB SNOOZE: not a number of seconds: nan"),
        ("JOB", "SNOOZE j-000001 -1", "ERR JOB SNOOZE: seconds must be between 0 and"),
        ("JOB", "SNOOZE j-000001 5", "ERR Job not found"),
        (
            "PUSH",
            '{"jid":"j-000001","jobtype":"x","args":[],"custom":{"timeout":"soon"}}',
            "ERR custom.timeout must be a number of seconds above 0",
        ),
        ("JOB", "WAIT x soon", "ERR JOB WAIT: not a number of seconds: soon"),
        ("JOB", 'LOG {"jid":"nope-nope","line":"x"}', "ERR unknown job nope-nope"),
        ("ACK", '{"jid":"j-000001","result":' + '"' + "x" * 70_000 + '"}', "ERR result too large"),
        ("ACK", '{"jid":"j-000001","result":{"n":1e400}}', "ERR invalid result: Number out of"),
        ("push", "{}", "ERR unknown command push"),
        ("HELLO", "{}", "ERR unknown command HELLO"),
    ],
)
async def test_error_replies_keep_the_connection(
    broker: App, verb: str, arg: str | None, message: str
) -> None:
    w = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError) as caught:
        await w.call(verb, arg)
    assert str(caught.value).startswith(message)
    assert await w.call("PUSH", job("jid-after1")) == b"OK"


async def test_pushb_reports_only_failures(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    jobs = [job("jid-0001"), job("short"), job("jid-0003", queue="bad queue"), job("jid-0001")]
    errors = json.loads(await w.call("PUSHB", jobs))
    assert set(errors) == {"short", "jid-0003", "jid-0001"}
    assert "reasonable jid" in errors["short"]
    assert json.loads(await w.call("PUSHB", [job("jid-0004")])) == {}
    with pytest.raises(WireError, match="invalid JSON"):
        await w.call("PUSHB", "{}")


async def test_beat_states(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    assert await w.call("BEAT", {"wid": "w1", "rss_kb": 1000}) == b"OK"
    assert json.loads(await w.call("BEAT", {"wid": "w1", "current_state": "quiet"})) == {
        "state": "quiet"
    }
    assert await w.call("FETCH", "default") is None  # quiet workers get no work
    assert json.loads(await w.call("BEAT", {"wid": "w1", "current_state": "terminate"})) == {
        "state": "terminate"
    }


async def test_worker_record_goes_with_last_connection(broker: App, rdb: redis.Redis) -> None:
    a = await Wire.open(broker.port, hello={"wid": "w1"})
    b = await Wire.open(broker.port, hello={"wid": "w1"})
    assert rdb.hget(keys.worker("w1"), "connections") == "2"
    await a.aclose()
    await eventually(lambda: rdb.hget(keys.worker("w1"), "connections") == "1")
    await b.send(b"END\r\n")
    await eventually(lambda: not rdb.exists(keys.worker("w1")))


async def test_end_closes_without_reply(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.send(b"END\r\n")
    with pytest.raises(EOFError):
        await w.reply()


async def test_pipelined_commands_answer_in_order(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    lines = b"".join(
        b"PUSH " + json.dumps(job(f"jid-{i:05d}")).encode() + b"\r\n" for i in range(200)
    )
    await w.send(lines + b"INFO\nbogus\r\n")
    for _ in range(200):
        assert await w.reply() == b"OK"
    assert json.loads(await w.reply())["faktory"]["total_enqueued"] == 200
    with pytest.raises(WireError, match="unknown command bogus"):
        await w.reply()


async def test_waiting_fetch_is_woken_by_a_push(start_broker: StartBroker) -> None:
    app = await start_broker(fetch_timeout=30)
    fetcher = await Wire.open(app.port, hello={"wid": "w1"})
    pusher = await Wire.open(app.port, hello={})
    await fetcher.send(b"FETCH default\r\n")
    await trio.sleep(0.05)  # let the FETCH start waiting; the push below must wake it
    with trio.fail_after(5):
        await pusher.call("PUSH", job("jid-0001"))
        assert json.loads(await fetcher.reply())["jid"] == "jid-0001"


async def test_push_through_another_broker_wakes_a_waiting_fetch(start_broker: StartBroker) -> None:
    one = await start_broker(fetch_timeout=30)
    two = await start_broker(fetch_timeout=30)
    fetcher = await Wire.open(one.port, hello={"wid": "w1"})
    pusher = await Wire.open(two.port, hello={})
    await fetcher.send(b"FETCH default\r\n")
    await trio.sleep(0.05)
    with trio.fail_after(5):
        await pusher.call("PUSH", job("jid-0001"))
        assert json.loads(await fetcher.reply())["jid"] == "jid-0001"


async def test_line_too_long_replies_and_closes(start_broker: StartBroker) -> None:
    app = await start_broker(max_line_bytes=1000)
    w = await Wire.open(app.port, hello={})
    await w.send(b"PUSH " + b"x" * 2000)
    with pytest.raises(WireError, match="line too long"):
        await w.reply()
    assert await w.closed()


async def test_max_connections(start_broker: StartBroker) -> None:
    app = await start_broker(max_connections=2)
    first = await Wire.open(app.port, hello={})
    second = await Wire.open(app.port, hello={})
    third = await Wire.open(app.port)
    with pytest.raises(WireError, match="too many connections: 2"):
        await third.call("HELLO", {"v": 2})
    assert await first.call("INFO") and await second.call("INFO")


async def test_idle_connections_are_closed(start_broker: StartBroker) -> None:
    app = await start_broker(idle_timeout=0.2)
    w = await Wire.open(app.port, hello={})
    with trio.fail_after(5):
        assert await w.closed()


async def test_unexpected_error_is_internal_and_connection_survives(
    start_broker: StartBroker,
) -> None:
    chains = Chains()

    async def broken(ctx: Context, next_: Next) -> None:
        if ctx.job.jobtype == "crash":
            raise ZeroDivisionError("boom")
        if ctx.job.jobtype == "deny":
            raise Halt("DENIED", "no thanks")
        await next_()

    chains.push.add(broken)
    app = await start_broker(chains=chains)
    w = await Wire.open(app.port, hello={})
    with pytest.raises(WireError, match=r"^ERR internal error$"):
        await w.call("PUSH", job("jid-0001", jobtype="crash"))
    with pytest.raises(WireError, match=r"^DENIED no thanks$"):
        await w.call("PUSH", job("jid-0002", jobtype="deny"))
    assert await w.call("PUSH", job("jid-0003")) == b"OK"


async def test_queue_commands(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jid-0001"))
    assert await w.call("QUEUE", "pause default") == b"OK"
    assert await w.call("FETCH", "default") is None
    assert await w.call("QUEUE", "RESUME *") == b"OK"
    assert json.loads(await w.call("QUEUE", "LATENCY default"))["default"] >= 0
    assert await w.call("QUEUE", "REMOVE default nope") == b"OK"
    assert json.loads(await w.call("INFO"))["faktory"]["queues"] == {}


async def test_mutate_accepts_spaces(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jid-0001", at="2099-01-01T00:00:00Z"))
    assert (
        await w.call(
            "MUTATE", '{"cmd": "kill", "target": "scheduled", "filter": {"jids": ["jid-0001"]}}'
        )
        == b"OK"
    )
    assert json.loads(await w.call("INFO"))["faktory"]["sets"]["dead"] == 1


async def test_flush_keeps_workers_and_foreign_keys(broker: App, rdb: redis.Redis) -> None:
    rdb.set("someone-else", "1")
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("jid-0001"))
    await w.call("PUSH", job("jid-0002", at="2099-01-01T00:00:00Z"))
    assert await w.call("FLUSH") == b"OK"
    info = json.loads(await w.call("INFO"))["faktory"]
    assert info["total_enqueued"] == 0 and info["queues"] == {} and info["sets"]["scheduled"] == 0
    assert await w.call("BEAT", {"wid": "w1"}) == b"OK"
    assert rdb.get("someone-else") == "1"
    marks = {keys.SCHEMA_KEY, *([keys.SPLIT_MARK] if broker.manager.store.redis.split else [])}
    assert set(rdb.keys("hopper:*")) == {keys.WORKERS, keys.worker("w1"), *marks}


async def test_shutdown_answers_and_closes(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    broker.stop()
    with trio.fail_after(5):
        assert await w.closed()


async def test_expired_reservation_comes_back(start_broker: StartBroker) -> None:
    app = await start_broker(min_reservation=1)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    await w.call("PUSH", job("jid-0001", reserve_for=1, retry=3))
    assert json.loads(await w.call("FETCH", "default"))["jid"] == "jid-0001"

    async def in_retries() -> bool:
        return json.loads(await w.call("INFO"))["faktory"]["sets"]["retries"] == 1

    await eventually(in_retries)
    with pytest.raises(WireError, match="Job not found"):
        await w.call("FAIL", {"jid": "jid-0001"})


async def test_pipelined_pushes_each_get_their_own_reply(start_broker: StartBroker) -> None:
    chains = Chains()

    async def deny(ctx: Context, next_: Next) -> None:
        if ctx.job.jobtype == "deny":
            raise Halt("DENIED", "no")
        await next_()

    chains.push.add(deny)
    app = await start_broker(chains=chains)
    w = await Wire.open(app.port, hello={})
    lines = [
        job("jid-0001"),
        "{bad",
        job("jid-0001"),  # duplicate of the first, in the same run
        job("jid-0002", jobtype="deny"),
        job("jid-0003", queue="other"),
        job("short"),
    ]
    await w.send(
        b"".join(
            b"PUSH " + (x if isinstance(x, str) else json.dumps(x)).encode() + b"\r\n"
            for x in lines
        )
        + b"END\r\n"
    )
    assert await w.reply() == b"OK"
    for expected in ("ERR invalid JSON", "ERR jid jid-0001 is already in use", "DENIED no"):
        with pytest.raises(WireError) as caught:
            await w.reply()
        assert str(caught.value).startswith(expected)
    assert await w.reply() == b"OK"
    with pytest.raises(WireError, match="reasonable jid"):
        await w.reply()
    assert await w.closed()
    probe = await Wire.open(app.port, hello={})
    assert json.loads(await probe.call("INFO"))["faktory"]["queues"] == {"default": 1, "other": 1}


async def test_pipelined_fetches_and_acks(broker: App, rdb: redis.Redis) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    other = await Wire.open(broker.port, hello={"wid": "w1"})
    for i in range(3):
        await w.call("PUSH", job(f"jid-{i:04d}", queue="a" if i < 2 else "b"))
    await w.send(b"FETCH a b\r\nFETCH a b\r\nFETCH a\r\nFETCH a b\r\nFETCH a b\r\n")
    got = [json.loads(await w.reply())["jid"] for _ in range(2)]
    assert got == ["jid-0000", "jid-0001"]
    assert await w.reply() is None  # FETCH a: queue a is empty now (after the wait)
    assert json.loads(await w.reply())["jid"] == "jid-0002"
    assert await w.reply() is None
    acks = ['{"jid":"jid-0000"}', "nope", '{"jid":"unknown1"}', '{"jid":"jid-0002"}']
    await w.send("".join(f"ACK {a}\r\n" for a in acks).encode())
    assert await w.reply() == b"OK"
    with pytest.raises(WireError, match="invalid ACK nope"):
        await w.reply()
    assert await w.reply() == b"OK" and await w.reply() == b"OK"
    assert await other.call("ACK", {"jid": "jid-0001"}) == b"OK"  # found through the index
    info = json.loads(await w.call("INFO"))["faktory"]
    assert info["total_processed"] == 3 and info["sets"]["working"] == 0


async def test_replies_are_not_held_behind_a_waiting_fetch(start_broker: StartBroker) -> None:
    app = await start_broker(fetch_timeout=30)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    pusher = await Wire.open(app.port, hello={})
    await pusher.call("PUSH", job("jid-0001"))
    await w.send(b"INFO\r\nFETCH default\r\nFETCH default\r\nFETCH default\r\n")
    with trio.fail_after(5):
        assert json.loads(await w.reply())["faktory"]["total_enqueued"] == 1
        assert json.loads(await w.reply())["jid"] == "jid-0001"  # not held behind the waits
        await pusher.call("PUSH", job("jid-0002"))
        assert json.loads(await w.reply())["jid"] == "jid-0002"
        await pusher.call("PUSH", job("jid-0003"))
        assert json.loads(await w.reply())["jid"] == "jid-0003"


async def test_a_run_of_fetches_that_finds_nothing_waits_once(broker: App) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    started = trio.current_time()
    await w.send(b"FETCH default\r\n" * 3)
    for _ in range(3):
        assert await w.reply() is None
    assert trio.current_time() - started < 2 * 0.5  # one fetch_timeout (0.5 s), not three
