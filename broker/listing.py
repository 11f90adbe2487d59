"""Operators' listings, read-only: pages of the retries, scheduled, dead and working sets of
one queue or of all (JOB LIST, and the dashboard in process), and the connected workers with
the jobs they hold (INFO). The cost of a call is bounded whatever the size of the sets: each
queue's set is read from the cursor on (listing.lua), a page at most, or SCAN_WINDOW entries
spread over the queues when a filter must read them. Changes go through MUTATE, which claims
exactly the entries it is given as read.
"""

import msgspec

from hopper_broker.concurrently import each
from hopper_broker.config import Settings
from hopper_broker.store.jobs import Entry
from hopper_broker.store.listing import WorkerRecord
from hopper_broker.store.redis import Store
from hopper_client.schema.jobs import format_time, job_decoder
from hopper_client.schema.pages import (
    SCAN_WINDOW,
    Listed,
    ListQuery,
    Page,
    make_cursor,
    parse_cursor,
    sort_key,
)

INFO_WORKERS = 1000  # workers INFO lists at most (those that beat last); `total`: how many
INFO_HELD = 100  # jobs INFO lists per worker at most; `more` says it holds others


class Hello(msgspec.Struct):
    """What INFO shows of a worker's first HELLO."""

    hostname: str = ""
    pid: int = 0
    labels: list[str] = msgspec.field(default_factory=list)


class HeldJob(msgspec.Struct, frozen=True):
    """A job whose reservation a worker holds; `since` is when it began (its expiry less the
    job's reservation: later if TRACK SET extended it)."""

    jid: str
    queue: str
    jobtype: str
    since: str
    reserved_until: str


class WorkerShown(msgspec.Struct, frozen=True, omit_defaults=True):
    """One worker process in INFO; `more`: it holds other jobs than those listed."""

    wid: str
    hostname: str
    pid: int
    labels: list[str]
    state: str
    beat_at: str
    rss_kb: int
    connections: int
    jobs: list[HeldJob]
    more: bool = False


class WorkersShown(msgspec.Struct, frozen=True):
    """INFO's `hopper.workers`: how many are registered, the first INFO_WORKERS of them."""

    total: int
    listed: list[WorkerShown]


_hello = msgspec.json.Decoder(Hello)

Seen = tuple[tuple[float, bytes], str, Entry]  # (sort key, queue, entry)


class Listing:
    """Read-only pages of the sets and the worker registry."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def page(self, query: ListQuery) -> Page:
        """One page of `query.target` after `query.cursor`, in score order across queues."""
        query.check()
        queues = sorted(set(query.queues)) or await self.store.sets.queues_with(query.target)
        after = parse_cursor(query.cursor) if query.cursor else None
        window = query.limit
        if query.filtered:
            window = max(query.limit, SCAN_WINDOW // max(len(queues), 1))
        desc = query.descending
        read: dict[str, list[Entry]] = {}

        async def read_queue(queue: str) -> None:
            read[queue] = await self.store.listing.page(queue, query.target, desc, after, window)

        await each(queues, read_queue)  # the reads share one round trip
        seen: list[Seen] = []
        bound = None  # every queue's set is read up to here (None: to its end)
        for queue, entries in read.items():
            seen += [(sort_key(score, jid), queue, (jid, score, p)) for jid, score, p in entries]
            if len(entries) == window:
                last = sort_key(entries[-1][1], entries[-1][0])
                bound = last if bound is None else (max if desc else min)(bound, last)
        seen.sort(key=lambda s: s[0], reverse=desc)
        if bound is not None:
            seen = [s for s in seen if (s[0] >= bound if desc else s[0] <= bound)]
        return _page(query, seen, bound is not None)

    async def workers(self) -> WorkersShown:
        """The registered workers (INFO_WORKERS at most) with what each holds (see
        protocol.md, INFO)."""
        total, records = await self.store.listing.workers(INFO_WORKERS, INFO_HELD)
        return WorkersShown(total, [self._worker(record) for record in records])

    def _worker(self, record: WorkerRecord) -> WorkerShown:
        try:
            hello = _hello.decode(record.info)
        except msgspec.DecodeError:  # a HELLO of other types than the reference's
            hello = Hello()
        return WorkerShown(
            wid=record.wid,
            hostname=hello.hostname,
            pid=hello.pid,
            labels=hello.labels,
            state=record.state,
            beat_at=format_time(record.beat),
            rss_kb=record.rss_kb,
            connections=record.connections,
            jobs=[self._held(*held) for held in record.held],
            more=record.more,
        )

    def _held(self, queue: str, jid: str, expiry: bytes, payload: bytes | None) -> HeldJob:
        until = float(expiry)
        default, lowest, highest = self.settings().reservation
        job = job_decoder.decode(payload) if payload else None
        seconds = min(max((job.reserve_for if job else 0) or default, lowest), highest)
        return HeldJob(
            jid=jid,
            queue=queue,
            jobtype=job.jobtype if job else "",
            since=format_time(until - seconds),
            reserved_until=format_time(until),
        )


def _page(query: ListQuery, seen: list[Seen], more: bool) -> Page:
    """The page of the matching entries of `seen` (in order); a cursor after the last one
    looked at when the limit was reached or entries remain beyond what was read."""
    listed: list[Listed] = []
    scanned, last = 0, None
    for _, queue, (jid, score, payload) in seen:
        scanned += 1
        last = (score, jid)
        if payload is not None and query.matches(payload):
            listed.append(Listed(queue, jid, float(score), msgspec.Raw(payload)))
            if len(listed) == query.limit:
                more = True
                break
    cursor = make_cursor(*last) if more and last is not None else None
    return Page(jobs=listed, cursor=cursor, scanned=scanned)
