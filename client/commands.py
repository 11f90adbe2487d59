"""Sans-IO commands: each builder returns the request line and how to read its reply.

Both clients (sync and async) run the same `Call`s, so the protocol lives here once. `parse`
receives the reply and whether the line was sent again after a lost connection: a resent
PUSH that finds its jid taken, or a resent FAIL that finds no job, already succeeded.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, Literal, NamedTuple, TypedDict, TypeVar

import msgspec

from hopper_client.errors import ClientError, JobFailed, ServerError, UnknownJob
from hopper_client.schema.errors import JID_IN_USE, JOB_NOT_FOUND
from hopper_client.schema.jobs import (
    OVER,
    Ack,
    Beat,
    FailPayload,
    Job,
    JobState,
    LogLine,
    MutateFilter,
    Mutation,
    TrackSet,
    encode,
    job_decoder,
    job_state_decoder,
)
from hopper_client.wire import CRLF, Reply

T = TypeVar("T")

MutateCommand = Literal["clear", "kill", "discard", "requeue"]
MutateTarget = Literal["retries", "scheduled", "dead"]
WorkerState = Literal["running", "quiet", "terminate"]
ENDED = frozenset(OVER)  # the states of a job that is over (JOB WAIT answers)
FAILED = frozenset(OVER) - {"done"}  # over without a result


class Heartbeat(NamedTuple):
    """The broker's answer to a worker's BEAT: the state it wants the worker in, and the jids
    (of those the worker said it runs) that it no longer holds."""

    state: WorkerState
    drop: list[str]


class BeatReply(msgspec.Struct):
    """The bulk reply to BEAT: `{"state":...}`, with `"drop":[...]` when jids were sent."""

    state: str = "running"
    drop: list[str] = msgspec.field(default_factory=list)


class Call(NamedTuple, Generic[T]):
    """One request line and the reader of its reply: `parse(reply, resent)`."""

    line: bytes
    parse: Callable[[Reply, bool], T]


_strings_decoder = msgspec.json.Decoder(dict[str, str])
_info_decoder = msgspec.json.Decoder(dict[str, Any])
_latency_decoder = msgspec.json.Decoder(dict[str, float])
_beat_reply_decoder = msgspec.json.Decoder(BeatReply)
_WORKER_STATES: dict[str, WorkerState] = {"running": "running", "terminate": "terminate"}


def value(reply: Reply) -> bytes | None:
    """The reply's data; raises it when it is an error."""
    if isinstance(reply, ServerError):
        raise reply
    return reply


def data(reply: Reply) -> bytes:
    """The reply's data, which must be present."""
    result = value(reply)
    if result is None:
        raise ClientError("the broker answered nothing where data was expected")
    return result


def _ok(reply: Reply, resent: bool) -> None:
    value(reply)


def _in_use(jid: str) -> str:
    return JID_IN_USE.format(jid)


def _refusal(jid: str, reply: Reply, resent: bool) -> ServerError | None:
    """The error a PUSH reply carries, if it counts: a resent PUSH that finds its jid taken
    was pushed by its first attempt."""
    if not isinstance(reply, ServerError) or (resent and reply.message == _in_use(jid)):
        return None
    return reply


def push(job: Job) -> Call[str]:
    jid = job.jid

    def parse(reply: Reply, resent: bool) -> str:
        if error := _refusal(jid, reply, resent):
            raise error
        return jid

    return Call(b"PUSH " + encode(job) + CRLF, parse)


def pipelined_push(job: Job) -> Call[dict[str, str]]:
    """PUSH whose reply reads as PUSHB's: {jid: error} when refused, else {}."""
    jid = job.jid

    def parse(reply: Reply, resent: bool) -> dict[str, str]:
        if error := _refusal(jid, reply, resent):
            text = error.message if error.code == "ERR" else f"{error.code} {error.message}"
            return {jid: text}
        return {}

    return Call(b"PUSH " + encode(job) + CRLF, parse)


def push_bulk(jobs: Sequence[Job]) -> Call[dict[str, str]]:
    def parse(reply: Reply, resent: bool) -> dict[str, str]:
        errors = _strings_decoder.decode(data(reply))
        if resent:  # a jid taken by our own first attempt was pushed
            return {jid: text for jid, text in errors.items() if text != _in_use(jid)}
        return errors

    return Call(b"PUSHB " + encode(jobs) + CRLF, parse)


def fetch(queues: Sequence[str]) -> Call[Job | None]:
    if not queues:
        raise ValueError("fetch needs at least one queue")

    def parse(reply: Reply, resent: bool) -> Job | None:
        payload = value(reply)
        return None if payload is None else job_decoder.decode(payload)

    return Call(b"FETCH " + " ".join(queues).encode() + CRLF, parse)


def ack(jid: str, result: Any = None) -> Call[None]:
    """ACK, with the job's result when it has one (any JSON; a Hopper extension). Raises
    TypeError for a result that is not JSON."""
    if result is None:
        return Call(b"ACK " + encode({"jid": jid}) + CRLF, _ok)
    return Call(b"ACK " + encode(Ack(jid=jid, result=msgspec.Raw(encode(result)))) + CRLF, _ok)


def state(jid: str) -> Call[JobState]:
    return Call(f"JOB STATE {jid}".encode() + CRLF, _state)


def wait(jid: str, timeout: float) -> Call[JobState]:
    return Call(f"JOB WAIT {jid} {timeout:g}".encode() + CRLF, _state)


def cancel(jid: str) -> Call[JobState]:
    return Call(f"JOB CANCEL {jid}".encode() + CRLF, _state)


def snooze(jid: str, seconds: float) -> Call[None]:
    """JOB SNOOZE: hand a reserved job back to run again `seconds` later. A resent one that
    finds no job was taken by its first attempt."""
    return _report(f"JOB SNOOZE {jid} {float(seconds)!r}".encode() + CRLF, jid)


def _state(reply: Reply, resent: bool) -> JobState:
    return job_state_decoder.decode(data(reply))


def wait_step(client_timeout: float, left: float | None) -> float:
    """How long one JOB WAIT may wait: within the connection's reply timeout."""
    step = client_timeout / 2
    return step if left is None else max(0.0, min(left, step))


def outcome(state: JobState) -> Any:
    """The result of a job that is done (its JSON decoded; None when it left none); raises
    UnknownJob, or JobFailed for a discarded, dead or cancelled job. None for a job not over yet."""
    if state.state == "unknown":
        raise UnknownJob(f"no job {state.jid}")
    if state.state in FAILED:
        raise JobFailed(state)
    if state.state == "done" and len(state.result):
        return msgspec.json.decode(state.result)
    return None


def track(
    jid: str, percent: int | None = None, desc: str | None = None, until: str | None = None
) -> Call[None]:
    update = TrackSet(jid=jid, percent=percent, desc=desc, reserve_until=until)
    return Call(b"TRACK SET " + encode(update) + CRLF, _ok)


def log_line(jid: str, line: str) -> Call[None]:
    return Call(b"JOB LOG " + encode(LogLine(jid=jid, line=line)) + CRLF, _ok)


def fail(jid: str, errtype: str, message: str, backtrace: Iterable[str]) -> Call[None]:
    report = FailPayload(jid=jid, errtype=errtype, message=message, backtrace=list(backtrace))
    return _report(b"FAIL " + encode(report) + CRLF, jid)


def _report(line: bytes, jid: str) -> Call[None]:
    """A FAIL or SNOOZE: resent, "Job not found" means the first attempt was taken."""
    not_found = JOB_NOT_FOUND.format(jid)

    def parse(reply: Reply, resent: bool) -> None:
        if not (resent and isinstance(reply, ServerError) and reply.message == not_found):
            value(reply)

    return Call(line, parse)


def beat(wid: str, current_state: str = "", rss_kb: int = 0) -> Call[WorkerState]:
    if not wid:
        raise ValueError("only a client with a wid (a worker) can BEAT")
    line = b"BEAT " + encode(Beat(wid=wid, current_state=current_state, rss_kb=rss_kb)) + CRLF

    return Call(line, lambda reply, resent: _heartbeat(reply).state)


def heartbeat(wid: str, current_state: str, rss_kb: int, jids: Sequence[str]) -> Call[Heartbeat]:
    """BEAT carrying the jids the worker runs (a Hopper extension); the reply says which to
    drop. Also reads the replies of brokers that ignore `jids` (`+OK` or `{"state":...}`:
    nothing to drop)."""
    if not wid:
        raise ValueError("only a client with a wid (a worker) can BEAT")
    beat = Beat(wid=wid, current_state=current_state, rss_kb=rss_kb, jids=list(jids))
    return Call(b"BEAT " + encode(beat) + CRLF, lambda reply, resent: _heartbeat(reply))


def _heartbeat(reply: Reply) -> Heartbeat:
    text = data(reply)
    if text == b"OK":
        return Heartbeat("running", [])
    try:
        answer = _beat_reply_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ClientError(f"unexpected reply to BEAT: {text[:200]!r}: {exc}") from None
    return Heartbeat(_WORKER_STATES.get(answer.state, "quiet"), answer.drop)


class BatchStatus(msgspec.Struct, kw_only=True):
    """The reply of BATCH STATUS, Faktory Enterprise's fields. `complete_st` and `success_st`
    are each callback's state: "" not pushed yet, "1" pushed, "2" ACKed. `parent_bid` and
    `description` are None when the broker leaves them out (a top-level batch, none given)."""

    bid: str
    parent_bid: str | None = None
    description: str | None = None
    created_at: str = ""
    total: int = 0
    pending: int = 0
    failed: int = 0
    complete_st: str = ""
    success_st: str = ""


class NewBatch(msgspec.Struct, omit_defaults=True):
    """The argument of BATCH NEW: a success and/or a complete callback job."""

    parent_bid: str = ""
    description: str = ""
    success: Job | None = None
    complete: Job | None = None


_batch_status_decoder = msgspec.json.Decoder(BatchStatus)


def batch_new(spec: NewBatch) -> Call[str]:
    """BATCH NEW (Faktory Enterprise): the new batch's bid. A resent one made a batch of its
    own that was never committed: the broker forgets it (30 minutes), its callbacks never run.
    `batches.batch_spec` builds a checked `spec`."""
    return Call(b"BATCH NEW " + encode(spec) + CRLF, _bid)


def batch_open(bid: str) -> Call[str]:
    """BATCH OPEN: the bid again (the reply Enterprise's clients expect)."""
    return Call(b"BATCH OPEN " + _bid_word(bid) + CRLF, _bid)


def batch_commit(bid: str) -> Call[None]:
    """BATCH COMMIT: the batch's callbacks may fire once its jobs ran (committing again is
    allowed, so a resent COMMIT does no harm)."""
    return Call(b"BATCH COMMIT " + _bid_word(bid) + CRLF, _ok)


def batch_status(bid: str) -> Call[BatchStatus]:
    return Call(
        b"BATCH STATUS " + _bid_word(bid) + CRLF,
        lambda reply, resent: _batch_status_decoder.decode(data(reply)),
    )


def _bid(reply: Reply, resent: bool) -> str:
    return data(reply).decode()


def _bid_word(bid: str) -> bytes:
    if not bid or any(c.isspace() for c in bid):
        raise ValueError(f"not a batch id: {bid!r}")
    return bid.encode()


def info() -> Call[dict[str, Any]]:
    return Call(b"INFO" + CRLF, lambda reply, resent: _info_decoder.decode(data(reply)))


def flush() -> Call[None]:
    return Call(b"FLUSH" + CRLF, _ok)


def queue(subcommand: Literal["PAUSE", "RESUME", "REMOVE"], names: Sequence[str]) -> Call[None]:
    return Call(_queue_line(subcommand, names), _ok)


def latency(names: Sequence[str]) -> Call[dict[str, float]]:
    return Call(
        _queue_line("LATENCY", names),
        lambda reply, resent: _latency_decoder.decode(data(reply)),
    )


class Limits(TypedDict, total=False):
    """Limits on the jobs of one jobtype in a queue (QUEUE SET `<jobtype>.<limit>=...`)."""

    concurrency: int
    rate: float
    burst: int


class QueueSettings(Limits, total=False):
    """What QUEUE SET sets (Hopper); see protocol.md."""

    max_size: int
    draining: bool
    worker_concurrency: int
    group_concurrency: int
    group_rate: float
    group_burst: int


def queue_settings(
    names: Sequence[str], settings: QueueSettings, jobtypes: Mapping[str, Limits] | None = None
) -> Call[None]:
    """QUEUE SET (Hopper): a setting not given (or None) stays as it is; 0 (or False) clears a
    limit; `jobtypes` maps a jobtype to its limits in these queues."""
    given: dict[str, Any] = dict(settings)
    for jobtype, limits in (jobtypes or {}).items():
        if not jobtype or any(c.isspace() or c == "=" for c in jobtype):
            raise ValueError(f"QUEUE SET cannot name the jobtype {jobtype!r}")
        given.update((f"{jobtype}.{limit}", value) for limit, value in limits.items())
    words = [
        f"{name}={('on' if value else 'off') if isinstance(value, bool) else value}"
        for name, value in given.items()
        if value is not None
    ]
    if not words:
        raise ValueError("QUEUE SET needs at least one setting")
    return Call(_queue_line("SET", [*names, *words]), _ok)


def drain(on: bool) -> Call[None]:
    """DRAIN ON|OFF (Hopper): the whole broker refuses pushes, or takes them again."""
    return Call(b"DRAIN ON" + CRLF if on else b"DRAIN OFF" + CRLF, _ok)


def _queue_line(subcommand: str, names: Sequence[str]) -> bytes:
    if not names:
        raise ValueError(f"QUEUE {subcommand} needs at least one queue name")
    return f"QUEUE {subcommand} {' '.join(names)}".encode() + CRLF


def mutate(
    cmd: MutateCommand,
    target: MutateTarget,
    *,
    jids: Sequence[str] = (),
    jobtype: str = "",
    regexp: str = "",
) -> Call[None]:
    selection = MutateFilter(regexp=regexp, jobtype=jobtype, jids=list(jids))
    chosen = selection if (jids or jobtype or regexp) else None
    return Call(b"MUTATE " + encode(Mutation(cmd=cmd, target=target, filter=chosen)) + CRLF, _ok)
