"""Fuzzing: hypothesis on the pure layers (framing, handshake, job decoding and the failure path,
MUTATE globs), and a socket fuzzer that sends random and mutated frames over many connections to
a broker process while a well-behaved client keeps working.

The socket fuzzer checks: every line gets exactly one reply (an error for what is malformed) or
the connection closes cleanly (END, or a refused handshake); no reply takes longer than
REPLY_DEADLINE; the broker process lives and its memory stays bounded.
"""

import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import redis
import trio
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chaos.conn import Conn
from chaos.figures import record
from chaos.load import wait_for
from chaos.marks import CHAOS
from hopper_broker import retry
from hopper_broker.config import DEAD_TTL
from hopper_broker.errors import ProtocolError
from hopper_broker.mutate import matches
from hopper_broker.protocol import Command, LineReader
from hopper_broker.session import Session
from hopper_broker.store.keys import QueueKeys
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import (
    FailPayload,
    MutateFilter,
    ack_decoder,
    beat_decoder,
    check_queue_name,
    decode_pushed,
    decode_pushed_many,
    encode,
    fail_decoder,
    format_time,
    hello_decoder,
    job_decoder,
    mutation_decoder,
    parse_time,
    validate_new,
)
from tests.conftest import BrokerProcess, check_store, on_rig
from tests.wire import Wire, WireError, job

EXAMPLES = 3000 if os.environ.get("HOPPER_CHAOS") else 150
NOW = 1_764_000_000.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
timestamps = st.integers(-(10**12), 10**12).map(lambda s: format_time(float(s) / 1000))
failures = st.fixed_dictionaries(
    {
        "retry_count": st.integers(-(2**63), 2**63 - 1),
        "remaining": st.integers(-(2**63), 2**63 - 1),
        "failed_at": st.text(max_size=30),
        "message": st.text(max_size=30),
        "errtype": st.text(max_size=10),
    },
    optional={"next_at": st.text(max_size=30), "backtrace": st.lists(st.text(max_size=10))},
)
jobs = st.fixed_dictionaries(
    {
        "jid": st.text(max_size=12) | json_values,
        "jobtype": st.text(max_size=8) | json_values,
        "args": st.lists(json_values, max_size=4) | json_values,
    },
    optional={
        "queue": st.sampled_from(["default", "q.1", "a b", "", "ü"]) | json_values,
        "retry": st.integers(-(2**63), 2**63 - 1) | st.none(),
        "reserve_for": st.integers(-(2**63), 2**63 - 1),
        "at": timestamps | st.text(max_size=30),
        "custom": st.dictionaries(st.text(max_size=8), json_values) | json_values,
        "failure": failures | json_values,
        "created_at": st.text(max_size=30),
        "enqueued_at": st.text(max_size=30),
        "backtrace": st.integers(-(2**63), 2**63 - 1),
        "extra": json_values,
    },
)
POISON = {
    "jid": "poison-01",
    "jobtype": "x",
    "args": [],
    "retry": 2**62,
    "failure": {
        "retry_count": 2**62 - 5,  # below `retry`: one more retry, after 2**248 s
        "remaining": 1,
        "failed_at": "",
        "message": "",
        "errtype": "",
    },
}


# -- hypothesis on the pure layers --------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(st.lists(st.binary(max_size=300) | st.sampled_from([b"\n", b"\r\n", b"\r"]), max_size=40))
def test_framing_takes_any_bytes(chunks: list[bytes]) -> None:
    reader = LineReader(256)
    try:
        for chunk in chunks:
            reader.feed(chunk)
            for command in reader.commands():
                assert isinstance(command.verb, str) and b"\n" not in command.arg
            assert reader.pending <= 256 + 1  # memory held per connection is bounded
    except ProtocolError as exc:
        assert exc.reply == "ERR line too long (max 256 bytes)"


@settings(max_examples=EXAMPLES)
@given(
    st.sampled_from(["HELLO", "hello", "PUSH", ""]) | st.text(max_size=8),
    st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
    st.sampled_from(["", "secret"]),
)
def test_handshake_takes_any_line(verb: str, arg: bytes, password: str) -> None:
    with contextlib.suppress(ProtocolError, CommandError):
        Session(password).handshake(Command(verb, arg))


DECODERS = [
    decode_pushed,
    decode_pushed_many,
    fail_decoder.decode,
    ack_decoder.decode,
    hello_decoder.decode,
    beat_decoder.decode,
    mutation_decoder.decode,
]


@settings(max_examples=EXAMPLES)
@given(
    st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | jobs.map(encode)
)
def test_decoders_take_any_bytes(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(msgspec.DecodeError):
            decode(data)


def lifecycle(data: bytes) -> None:
    """What the broker does with a pushed job: decode, validate, store; then fail it twice (a
    FAIL or an expired reservation) and enqueue it again, re-decoding the stored payload."""
    try:
        job = decode_pushed(data)
    except msgspec.DecodeError:
        return
    try:
        validate_new(job, NOW)
        check_queue_name(job.queue)
        if job.at:
            parse_time(job.at)
    except (CommandError, ValueError):
        return
    stored = job_decoder.decode(encode(job))
    assert stored == job
    rng = random.Random(0)
    for _ in range(2):
        retry.record_failure(stored, FailPayload(errtype="E", message="m"), NOW)
        retry.next_step(stored, NOW, rng, DEAD_TTL)
        stored = job_decoder.decode(encode(stored))
    stored.enqueued_at = format_time(NOW)
    job_decoder.decode(encode(stored))


@settings(max_examples=EXAMPLES)
@given(jobs)
def test_any_pushed_job_survives_its_lifecycle(fields: dict[str, Any]) -> None:
    lifecycle(json.dumps(fields).encode())


def test_poison_failure_count() -> None:
    lifecycle(json.dumps(POISON).encode())


@on_rig
def test_a_poison_job_does_not_kill_the_broker(
    broker_process: Callable[..., BrokerProcess], store_url: str, rdb: redis.Redis
) -> None:
    broker = broker_process("--min-reservation", "1", "--reaper-interval", "0.05")
    assert broker.process is not None
    conn = Conn(broker.port, {"wid": "w1"})
    assert conn.call("PUSH", {**POISON, "reserve_for": 1}) == b"OK"
    assert json.loads(conn.call("FETCH", "default"))["jid"] == POISON["jid"]
    conn.close()
    wait_for(
        lambda: broker.process.poll() is not None or not rdb.zcard(QueueKeys("default").working),
        10,
        "the reservation reaped",
    )
    assert broker.process.poll() is None, "the broker died"
    check_store(store_url)


@settings(max_examples=EXAMPLES)
@given(st.text(alphabet="ab*?[]^-\\z", max_size=12), st.text(alphabet="abz-[]", max_size=20))
@example("[z-a]", "a")
def test_any_glob_can_be_matched(pattern: str, text: str) -> None:
    matches(MutateFilter(regexp=pattern), text, "")


def test_glob_matching_is_not_exponential() -> None:
    started = time.perf_counter()
    matches(MutateFilter(regexp="*a*a*a*a*b"), "a" * 200, "")
    assert time.perf_counter() - started < 0.2


# -- the socket fuzzer --------------------------------------------------------------------------

REPLY_DEADLINE = 10.0  # seconds for the replies to one frame (FETCH waits 0.1 s)
BEAT_INTERVAL = 5.0  # seconds between a fuzzing worker's own heartbeats
GOOD_QUEUE = "well-behaved"
CORPUS = [
    b'PUSH {"jid":"fz-00000001","jobtype":"x","args":[1,"two",{"3":[4]}],"queue":"fz"}',
    b'PUSH {"jid":"fz-00000002","jobtype":"x","args":[],"at":"2030-01-01T00:00:00Z","retry":3}',
    b'PUSH {"jid":"fz-00000003","jobtype":"x","args":[],"reserve_for":1,"custom":{"a":null}}',
    b'PUSHB [{"jid":"fz-00000004","jobtype":"x","args":[]},{"jid":"fz-00000005"}]',
    b"FETCH fz default other",
    b'ACK {"jid":"fz-00000001"}',
    b'FAIL {"jid":"fz-00000001","errtype":"E","message":"m","backtrace":["a","b"]}',
    b'BEAT {"wid":"fuzz","current_state":"quiet","rss_kb":12}',
    b"INFO",
    b"QUEUE PAUSE fz",
    b"QUEUE RESUME fz other",
    b"QUEUE LATENCY fz default",
    b"QUEUE REMOVE zz",
    b'MUTATE {"cmd":"kill","target":"retries","filter":{"jids":["fz-00000001"]}}',
    b'MUTATE {"cmd":"requeue","target":"dead","filter":{"jobtype":"x","regexp":"fz"}}',
    b"BATCH NEW {}",
    b"TRACK GET x",
    b"END",
    b'HELLO {"v":2}',
]
SPICE = [b"\x00", b"\xff", b"\xc3", b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b" ",
         b"\r", b"null", b"1e400", b"-0", b"18446744073709551616", b"\\ud800", b"[[[",
         b"*"]  # fmt: skip


def mutate(rng: random.Random, line: bytes) -> bytes:
    """One random change to a line: flip, insert, delete, duplicate, truncate or splice."""
    data = bytearray(line)
    position = rng.randrange(len(data) + 1)
    choice = rng.randrange(7)
    if choice == 0 and data:
        data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
    elif choice == 1:
        data[position:position] = rng.choice(SPICE) * rng.randint(1, 3)
    elif choice == 2:
        del data[position : position + rng.randint(1, 20)]
    elif choice == 3:
        data[position:position] = data[position : position + rng.randint(1, 40)]
    elif choice == 4:
        del data[position:]
    elif choice == 5:
        data[position:] = rng.choice(CORPUS)[rng.randrange(20) :]
    else:
        data = bytearray(rng.randbytes(rng.randint(0, 80)))
    return bytes(data.replace(b"\n", b" "))


def harmless(line: bytes) -> bool:
    """Lines that would wreck the well-behaved client's queue are not sent: FLUSH, and QUEUE
    on every queue or on the client's own."""
    verb = line.rstrip(b"\r").partition(b" ")[0]
    if verb == b"FLUSH":
        return False
    return not (verb == b"QUEUE" and (b"*" in line or GOOD_QUEUE.encode() in line))


def frame(rng: random.Random) -> list[bytes]:
    """1 to 3 lines: corpus lines, mutated once or more, or random bytes."""
    lines = []
    for _ in range(rng.randint(1, 3)):
        line = rng.choice(CORPUS)
        for _ in range(rng.choice((0, 1, 1, 2, 5))):
            line = mutate(rng, line)
        if harmless(line):
            lines.append(line)
    return lines or [b"INFO"]


def ends(line: bytes) -> bool:
    """Whether the server reads this line as END (the verb before the first space)."""
    line = line[:-1] if line.endswith(b"\r") else line
    return line.partition(b" ")[0] == b"END"


class Tally:
    def __init__(self) -> None:
        self.frames = 0
        self.lines = 0
        self.errors = 0
        self.closes = 0
        self.handshakes_refused = 0
        self.internal_errors = 0  # an unexpected exception in the broker


async def fuzz_connection(port: int, rng: random.Random, frames: int, tally: Tally) -> None:
    """Open, say HELLO, send frames and check each reply, reconnecting after END. One connection
    in ten sends a mutated HELLO instead, checks the answer and reconnects. A worker connection
    beats every BEAT_INTERVAL, as workers do (else it is dropped after worker_ttl)."""
    sent = 0
    while sent < frames:
        w = Wire(await trio.open_tcp_stream("127.0.0.1", port))
        try:
            with trio.fail_after(REPLY_DEADLINE):
                assert (await w.reply()).startswith(b"HI ")
                wid = b"fz%d" % rng.randrange(5)
                hello = b'HELLO {"v":2,"wid":"%s"}' % wid
                mutated = rng.random() < 0.1
                await w.send((mutate(rng, hello) if mutated else hello) + b"\r\n")
                tally.frames += 1
                sent += 1
                try:
                    assert await w.reply() == b"OK"
                except (WireError, EOFError, AssertionError):
                    tally.handshakes_refused += 1
                    continue
                if mutated:
                    continue
            beat_at = trio.current_time() + BEAT_INTERVAL
            while sent < frames:
                if trio.current_time() > beat_at:
                    beat_at = trio.current_time() + BEAT_INTERVAL
                    with trio.fail_after(REPLY_DEADLINE):
                        await w.call("BEAT", {"wid": wid.decode()})
                lines = frame(rng)
                await w.send(b"".join(line + b"\n" for line in lines))
                tally.frames += 1
                sent += 1
                with trio.fail_after(REPLY_DEADLINE):
                    for line in lines:
                        tally.lines += 1
                        if ends(line):
                            assert await w.closed()
                            tally.closes += 1
                            break
                        try:
                            await w.reply()
                        except WireError as exc:
                            tally.errors += 1
                            tally.internal_errors += "internal error" in str(exc)
                    else:
                        continue
                    break  # END: open a new connection
        finally:
            await w.aclose()


def vm_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize(
    ("connections", "frames"),
    [
        pytest.param(40, 100, id="fast"),
        pytest.param(200, 1500, id="chaos", marks=CHAOS),
    ],
)
async def test_socket_fuzzer_with_a_well_behaved_client(
    broker_process: Callable[..., BrokerProcess], redis_url: str, connections: int, frames: int
) -> None:
    broker = broker_process("--fetch-timeout", "0.1", "--max-line-bytes", "65536")
    assert broker.process is not None
    seed = int(os.environ.get("HOPPER_FUZZ_SEED", time.time_ns() % 2**32))
    tally = Tally()
    rounds, slowest = 0, 0.0

    async def well_behaved(done: trio.Event) -> None:
        nonlocal rounds, slowest
        w = await Wire.open(broker.port, hello={"wid": "good"})
        beat_at = trio.current_time() + BEAT_INTERVAL
        while not done.is_set():
            started = trio.current_time()
            jid = f"good-{rounds:08d}"
            with trio.fail_after(REPLY_DEADLINE):
                if started > beat_at:
                    beat_at = started + BEAT_INTERVAL
                    assert await w.call("BEAT", {"wid": "good"}) == b"OK"
                assert await w.call("PUSH", job(jid, queue=GOOD_QUEUE)) == b"OK"
                assert json.loads(await w.call("FETCH", GOOD_QUEUE))["jid"] == jid
                assert await w.call("ACK", {"jid": jid}) == b"OK"
            slowest = max(slowest, trio.current_time() - started)
            rounds += 1
        await w.aclose()

    await fuzz_connection(broker.port, random.Random(seed), 20, Tally())  # warm up
    rss_before = vm_rss_kb(broker.process.pid)
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(well_behaved, done)
        async with trio.open_nursery() as fuzzers:
            for n in range(connections):
                fuzzers.start_soon(
                    fuzz_connection, broker.port, random.Random(seed + n), frames, tally
                )
        done.set()
    rss_after = vm_rss_kb(broker.process.pid)
    assert broker.process.poll() is None, "the broker died"
    assert tally.internal_errors == 0
    assert rounds > 0 and slowest < 5, (rounds, slowest)
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)  # KiB
    assert broker.stop() == 0
    assert "Traceback" not in broker.log.read_text()
    check_store(redis_url)
    record(
        "socket-fuzz",
        seed=seed,
        frames=tally.frames,
        lines=tally.lines,
        error_replies=tally.errors,
        closes=tally.closes,
        handshakes_refused=tally.handshakes_refused,
        good_rounds=rounds,
        rss_growth_mb=(rss_after - rss_before) // 1024,
        lost=0,
    )
