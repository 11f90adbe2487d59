"""The job and message schemas of the protocol, as msgspec Structs; pure, no I/O.

Field order matters for `Job`: the stored payload starts with `{"enqueued_at":"…"` (the broker
owns that field and restamps it in Lua on every enqueue) followed by `"reserve_for":N` whenever
the job asks for a reservation of its own, then `"priority":N` for a priority other than the
default, then `"group":"…"` for a job of a group, which lets the scripts stamp and read them
without decoding JSON (see store/scripts/lib_lanes.lua and fetch.lua).
"""

import re
import time
from calendar import monthrange, timegm
from functools import lru_cache
from typing import Any, TypeVar

import msgspec

from hopper_client.schema.errors import CommandError

T = TypeVar("T")

DEFAULT_RETRY = 25
DEFAULT_QUEUE = "default"
MIN_JID_LENGTH = 8
MAX_RESERVE_FOR = 86_400  # seconds: the reference rejects reservations longer than a day
QUEUE_NAME = re.compile(r"[a-zA-Z0-9._-]+")


class Failure(msgspec.Struct, omit_defaults=True):
    """What the broker recorded about a job's failures (read-only for clients)."""

    retry_count: int
    remaining: int
    failed_at: str
    message: str
    errtype: str
    next_at: str = ""
    backtrace: list[str] = msgspec.field(default_factory=list)


class Job(msgspec.Struct, omit_defaults=True):
    """One unit of work as pushed by a client and stored by the broker.

    Every field has a default so that validation can produce the reference's own error texts;
    `validate_new` turns a decoded push into a storable job. Unknown top-level fields are dropped.
    The scalar fields come before `failure`, `custom` and `args`, so the first occurrence of a
    scalar's key in a stored payload is the job's own (scripts may read them from the prefix).
    """

    enqueued_at: str = ""
    reserve_for: int = 0
    priority: int = 0  # 1-9, higher first; 0 (omitted): the default, 5 (Hopper)
    group: str = ""  # fair turns between groups of a queue (Hopper)
    retry: int | None = None
    jid: str = ""
    queue: str = ""
    jobtype: str = ""
    created_at: str = ""
    at: str = ""
    backtrace: int = 0
    failure: Failure | None = None
    custom: dict[str, Any] | None = None
    args: list[Any] | None = None


class FailPayload(msgspec.Struct):
    """The argument of FAIL."""

    jid: str = ""
    errtype: str = ""
    message: str = ""
    backtrace: list[str] | None = None


class Ack(msgspec.Struct):
    """The argument of ACK; `result` (any JSON, kept as sent) is a Hopper extension."""

    jid: str = ""
    result: msgspec.Raw = msgspec.Raw()


class Hello(msgspec.Struct):
    """The argument of HELLO; `wid` makes the connection a consumer."""

    v: int = 0
    hostname: str = ""
    wid: str = ""
    pid: int = 0
    labels: list[str] = msgspec.field(default_factory=list)
    pwdhash: str = ""
    username: str = ""


class Beat(msgspec.Struct):
    """The argument of BEAT; `jids` (the jobs the worker runs) is a Hopper extension."""

    wid: str = ""
    current_state: str = ""
    rss_kb: int = 0
    jids: list[str] | None = None


class MutateFilter(msgspec.Struct):
    """Which entries of a set a MUTATE touches; `jids` wins over `regexp` and `jobtype`."""

    regexp: str = ""
    jobtype: str = ""
    jids: list[str] = msgspec.field(default_factory=list)


class Mutation(msgspec.Struct):
    """The argument of MUTATE."""

    cmd: str = ""
    target: str = ""
    filter: MutateFilter | None = None


class Progress(msgspec.Struct, omit_defaults=True):
    """What a job said of itself: TRACK SET's percent and desc, JOB LOG's lines."""

    updated_at: str = ""
    percent: int | None = None
    desc: str | None = None
    log: list[str] = msgspec.field(default_factory=list)


OVER = ("done", "discarded", "cancelled", "replaced", "expired", "dead")  # ended (JOB WAIT)


class JobState(msgspec.Struct, omit_defaults=True):
    """The answer of JOB STATE and JOB WAIT."""

    jid: str
    state: str  # unknown, queued, scheduled, working, retrying, dead, done, discarded, cancelled,
    # replaced, expired
    queue: str = ""
    jobtype: str = ""
    created_at: str = ""
    enqueued_at: str = ""
    at: str = ""  # scheduled: when it is enqueued
    next_at: str = ""  # retrying: when it runs again
    reserved_until: str = ""  # working: when its reservation expires
    wid: str = ""  # working: the worker holding it ('' when fetched by no worker)
    cancel_requested: bool = False  # working: JOB CANCEL asked its worker to stop it
    finished_at: str = ""
    attempts: int | None = None  # times it was started (absent for an unknown job)
    failure: Failure | None = None
    progress: Progress | None = None
    result: msgspec.Raw = msgspec.Raw()  # empty (omitted): no result


class JobEvent(msgspec.Struct, omit_defaults=True):
    """One event of the EVENTS stream (see protocol.md, Events)."""

    event: str  # pushed, scheduled, enqueued, fetched, progress, done, failed, dead, ...
    jid: str = ""
    queue: str = ""
    jobtype: str = ""
    at: float = 0.0  # unix seconds
    wid: str = ""  # fetched: the worker
    errtype: str = ""  # failed, dead, discarded
    run_at: float | None = None  # scheduled, failed, snoozed: when it runs (again)
    result: msgspec.Raw = msgspec.Raw()  # done: the result, if any
    progress: Progress | None = None  # progress
    count: int | None = None  # missed: how many (None: unknown)


class TrackSet(msgspec.Struct, omit_defaults=True):
    """The argument of TRACK SET (Faktory Enterprise)."""

    jid: str = ""
    percent: int | None = None
    desc: str | None = None
    reserve_until: str | None = None


class LogLine(msgspec.Struct):
    """The argument of JOB LOG."""

    jid: str = ""
    line: str = ""


job_decoder = msgspec.json.Decoder(Job)
jobs_decoder = msgspec.json.Decoder(list[Job])
fail_decoder = msgspec.json.Decoder(FailPayload)
ack_decoder = msgspec.json.Decoder(Ack)
hello_decoder = msgspec.json.Decoder(Hello)
beat_decoder = msgspec.json.Decoder(Beat)
mutation_decoder = msgspec.json.Decoder(Mutation)
any_decoder = msgspec.json.Decoder()
job_state_decoder = msgspec.json.Decoder(JobState)
job_event_decoder = msgspec.json.Decoder(JobEvent)
encoder = msgspec.json.Encoder()
encode = encoder.encode


def decode_input(decoder: msgspec.json.Decoder[T], data: bytes) -> T:
    """Decode what a client sent; every way it can be malformed raises msgspec.DecodeError
    (ValidationError is a kind of it), invalid UTF-8 and JSON nested too deeply included."""
    try:
        return decoder.decode(data)
    except UnicodeDecodeError:
        raise msgspec.DecodeError("invalid UTF-8 in a string") from None
    except RecursionError:
        raise msgspec.DecodeError("JSON is nested too deeply") from None


def decode_pushed(data: bytes) -> Job:
    """Decode one pushed job; a top-level `null` means "not given", as in the reference."""
    try:
        return decode_input(job_decoder, data)
    except msgspec.ValidationError:
        value = decode_input(any_decoder, data)
        if not isinstance(value, dict):
            raise
        return msgspec.convert(_without_nulls(value), Job)


def decode_pushed_many(data: bytes) -> list[Job]:
    """Decode the array of PUSHB, with the same treatment of `null` as decode_pushed."""
    try:
        return decode_input(jobs_decoder, data)
    except msgspec.ValidationError:
        value = decode_input(any_decoder, data)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise
        return msgspec.convert([_without_nulls(v) for v in value], list[Job])


def _without_nulls(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def validate_new(job: Job, now: float) -> Job:
    """Check a pushed job with the reference's rules and texts, and fill the server's defaults.

    Returns the job with `created_at`, `queue` and `retry` filled in. `at` is parsed later by
    the manager, which decides between enqueueing now and scheduling.
    """
    if len(job.jid) < MIN_JID_LENGTH:
        raise CommandError("jobs must have a reasonable jid parameter")
    if not job.jobtype:
        raise CommandError("jobs must have a jobtype parameter")
    if job.args is None:
        raise CommandError("jobs must have an args parameter")
    if job.reserve_for > MAX_RESERVE_FOR:
        raise CommandError("jobs cannot be reserved for more than one day")
    timeout = (job.custom or {}).get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise CommandError("custom.timeout must be a number of seconds above 0")
    if not job.queue:
        job.queue = DEFAULT_QUEUE
    if job.retry is None:
        job.retry = DEFAULT_RETRY
    if not job.created_at:
        job.created_at = format_time(now)
    return job


def check_queue_name(name: str) -> None:
    """Raise the reference's error unless `name` is a valid queue name."""
    if not QUEUE_NAME.fullmatch(name):
        raise CommandError(
            f'cannot get "{name}" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z'
        )


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_time(text: str) -> float:
    """Parse an RFC3339 timestamp (fraction optional, `Z` or ±hh:mm) into unix seconds."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC3339 timestamp")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not (1 <= month <= 12 and hour < 24 and minute < 60 and second < 60):
        raise ValueError("timestamp field out of range")
    if not 1 <= day <= monthrange(year, month)[1]:
        raise ValueError("day out of range")
    seconds = timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = float(match.group(7) or 0)
    zone = match.group(8)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds + fraction


@lru_cache(maxsize=4)
def _whole_second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def format_time(now: float) -> str:
    """Unix seconds as RFC3339 in UTC with microseconds, trailing zeros trimmed (like Go)."""
    whole = int(now)
    micros = round((now - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    text = _whole_second(whole)
    if micros:
        text += f".{micros:06d}".rstrip("0")
    return text + "Z"


def format_day(now: float) -> str:
    """The UTC date used for daily counters, `YYYY-MM-DD`."""
    return _day(int(now // 86_400))


@lru_cache(maxsize=4)
def _day(days: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(days * 86_400))
