"""Hopper's operator extensions, shared by both clients: JOB LIST (one page of the retries,
scheduled, dead or working jobs, filtered, after a cursor) and WORKER QUIET|TERMINATE; see
protocol.md."""

from collections.abc import Sequence
from typing import Literal, TypedDict, Unpack

import msgspec

from hopper_client.commands import Call, WorkerState, data
from hopper_client.schema.jobs import Job, encode
from hopper_client.schema.pages import DEFAULT_LIMIT, ListQuery
from hopper_client.wire import CRLF, Reply

ListTarget = Literal["retries", "scheduled", "dead", "working"]


class ListedJob(msgspec.Struct, frozen=True):
    """One entry of a page: its queue, jid, score (when it is due: next attempt, run time,
    purge time or reservation expiry, unix seconds) and the job."""

    queue: str
    jid: str
    score: float
    job: Job


class JobPage(msgspec.Struct, frozen=True):
    """A page of jobs; `cursor` continues the walk (None: nothing after these). A filtered
    page may hold fewer jobs than asked, even none, with a cursor: the broker looks at a
    bounded number of entries per call (`scanned`)."""

    jobs: list[ListedJob]
    cursor: str | None
    scanned: int


class ListOptions(TypedDict, total=False):
    """What selects the page: `queues` (none: every queue), `jobtype` (exactly), `error` (text
    in the failure, any case), `order` ("asc": lowest score first; default: dead newest first,
    the others soonest first), `cursor` (the previous page's), `limit` (1 to 1000, 50)."""

    queues: Sequence[str]
    jobtype: str
    error: str
    order: Literal["", "asc", "desc"]
    cursor: str | None
    limit: int


_page_decoder = msgspec.json.Decoder(JobPage)


def list_jobs(target: ListTarget, **options: Unpack[ListOptions]) -> Call[JobPage]:
    query = ListQuery(
        target=target,
        queues=list(options.get("queues", ())),
        jobtype=options.get("jobtype", ""),
        error=options.get("error", ""),
        order=options.get("order", ""),
        cursor=options.get("cursor") or "",
        limit=options.get("limit", DEFAULT_LIMIT),
    )
    return Call(b"JOB LIST " + encode(query) + CRLF, _page)


def _page(reply: Reply, resent: bool) -> JobPage:
    return _page_decoder.decode(data(reply))


class WorkerSignal(msgspec.Struct, frozen=True):
    """The reply of WORKER QUIET|TERMINATE: the worker's state after it."""

    wid: str
    state: WorkerState


_signal_decoder = msgspec.json.Decoder(WorkerSignal)


def signal_worker(wid: str, state: Literal["quiet", "terminate"]) -> Call[WorkerState]:
    """WORKER QUIET|TERMINATE: the worker's next BEAT is told (states only move forward)."""
    if not wid or any(c.isspace() for c in wid):
        raise ValueError(f"not a worker id: {wid!r}")
    line = f"WORKER {state.upper()} {wid}".encode() + CRLF
    return Call(line, lambda reply, resent: _signal_decoder.decode(data(reply)).state)
