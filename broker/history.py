"""The history: every job that reaches a final state (done, dead, discarded, cancelled, expired,
replaced) is archived by the script that ends it, in its queue (see scripts/lib_history.lua).
This room answers HISTORY queries a page at a time, newest first, and runs the retention rules
(`[retention.<state>]`: ttl and max per final state) with work that grows with what it deletes.

A page reads, per queue asked for, one script call over the state indexes (one zset per state,
or per state and jobtype), merges them newest first and reads the entries of that page; the
cursor is the last entry's (score, jid), so pages neither skip nor repeat entries while jobs
keep ending. A query without a queue merges every queue that has archived jobs in the states
asked for: its cost grows with the number of such queues (documented in protocol.md).
"""

import heapq
import math
from collections.abc import Sequence
from typing import Any

import msgspec

from hopper_broker.concurrently import each
from hopper_broker.config import Settings
from hopper_broker.store.keys import FINAL_STATES
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import QUEUE_NAME, format_time, parse_time
from hopper_client.schema.pages import SCORE

PAGE_SIZE = 50  # entries of a page when the query does not say
MAX_PAGE = 1000  # entries of a page at most
RETAIN_STEP = 1000  # archived jobs one purge call deletes at most
RETAIN_CALLS = 1000  # purge steps of one state in one pass at most (the next pass goes on)
RETAIN_QUEUES = 100  # queues one step of retention by count deletes from at most


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The argument of HISTORY: by jid, or a page filtered by queue, jobtype, state and time
    range (`since`/`until`: unix seconds or RFC 3339), after `cursor`."""

    jid: str | None = None
    queue: str | None = None
    jobtype: str | None = None
    state: str | list[str] | None = None
    since: float | str | None = None
    until: float | str | None = None
    cursor: str | None = None
    count: int = PAGE_SIZE


class Archived(msgspec.Struct, frozen=True):
    """An entry as the archive holds it."""

    state: str
    at: float
    jobtype: str
    job: msgspec.Raw
    reserved_until: float | None = None
    result: Any = None


class Reported(msgspec.Struct, frozen=True):
    """The few fields of an archived payload a report derives figures from."""

    reserve_for: int = 0
    failure: dict[str, Any] | None = None


class HistoryEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """One archived job as HISTORY answers it."""

    jid: str
    queue: str
    state: str
    jobtype: str
    ended_at: str
    attempts: int
    job: msgspec.Raw
    run_seconds: float | None = None
    failure: dict[str, Any] | None = None
    result: Any = None


class HistoryPage(msgspec.Struct, frozen=True):
    """HISTORY's reply: the page, and the cursor of the next one (None: that was the last)."""

    jobs: list[HistoryEntry]
    cursor: str | None


archived_decoder = msgspec.json.Decoder(Archived)
reported_decoder = msgspec.json.Decoder(Reported)
query_decoder = msgspec.json.Decoder(HistoryQuery)


class History:
    """HISTORY queries and the retention loop."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    async def query(self, query: HistoryQuery) -> HistoryPage:
        """One page of archived jobs, newest first, or the entries of one jid."""
        states = _states(query.state)
        if query.jid is not None:
            return HistoryPage(await self._by_jid(query.jid, query.queue, states), None)
        if not 1 <= query.count <= MAX_PAGE:
            raise CommandError(f"HISTORY count must be between 1 and {MAX_PAGE}")
        if query.queue is not None and not QUEUE_NAME.fullmatch(query.queue):
            raise CommandError(f"HISTORY: no such queue {query.queue!r}")
        until = "+inf" if query.until is None else repr(_seconds(query.until, "until"))
        since = "-inf" if query.since is None else repr(_seconds(query.since, "since"))
        cursor = _cursor(query.cursor)
        queues = [query.queue] if query.queue else await self._queues(states)
        picked: list[tuple[float, bytes, bytes, str]] = []  # score, jid, raw score, queue

        async def read(queue: str) -> None:
            pages = await self.store.history.page(
                queue, states, query.jobtype, query.count, until, since, cursor
            )
            picked.extend((s, jid.encode(), raw, queue) for page in pages for jid, s, raw in page)

        await each(queues, read)  # every queue's read in one round trip
        newest = heapq.nlargest(query.count, picked, key=lambda e: (e[0], e[1]))
        jobs = await self._entries([(e[3], e[1].decode()) for e in newest])
        if len(newest) < query.count:  # every source had fewer: nothing more
            return HistoryPage(jobs, None)
        last = newest[-1]
        return HistoryPage(jobs, f"{last[2].decode()}|{last[1].decode()}")

    async def retain(self, now: float) -> int:
        """One pass of the retention rules: per final state, what ended before now - ttl goes,
        then the oldest beyond max (every queue together). Returns how many entries it deleted."""
        config, deleted = self.settings(), 0
        for state in FINAL_STATES:
            rule = config.retention_of(state)
            deleted += await self._by_age(state, now - rule.ttl)
            if await self.store.history.count(state) > rule.max:
                async with self.store.history.count_pass() as mine:
                    if mine:
                        deleted += await self._by_count(state, rule.max)
        return deleted

    async def _by_age(self, state: str, bound: float) -> int:
        deleted = 0
        for _ in range(RETAIN_CALLS):
            queues = await self.store.history.older_than(state, bound, 100)
            if not queues:
                break
            for queue in queues:
                deleted += await self.store.history.purge(queue, state, bound, RETAIN_STEP)
        return deleted

    async def _by_count(self, state: str, most: int) -> int:
        """The oldest entries beyond `most`, every queue together: per step, the time T of
        the step-th oldest among the queues that hold the oldest (capped at the next queue's
        oldest, so no entry left is older than one deleted), then each of them up to T."""
        deleted = 0
        for _ in range(RETAIN_CALLS):
            count = await self.store.history.count(state)
            over = count - most
            oldest = await self.store.history.oldest(state, RETAIN_QUEUES + 1)
            if over <= 0 or not oldest:
                break
            step, queues = min(over, RETAIN_STEP), [q for q, _ in oldest[:RETAIN_QUEUES]]
            bound = await self._step_bound(queues, state, step)
            if len(oldest) > RETAIN_QUEUES:
                bound = min(bound, oldest[RETAIN_QUEUES][1])
            for queue in queues:
                gone = await self.store.history.purge(queue, state, bound, step, (most, count))
                deleted, count = deleted + gone, count - gone
        return deleted

    async def _step_bound(self, queues: list[str], state: str, step: int) -> float:
        """The time of the step-th oldest entry of `state` in `queues` (their newest when they
        hold fewer), reading about 2 * step times, not step per queue: a share of each queue's
        oldest, then the rest up to that time of the queues whose share ended before it."""
        share = min(step, -(-2 * step // len(queues)))
        firsts: dict[str, list[float]] = {}

        async def first(queue: str) -> None:
            firsts[queue] = await self.store.history.first_scores(queue, state, share)

        await each(queues, first)
        scores = sorted(s for found in firsts.values() for s in found)
        if not scores:
            return 0.0
        bound = scores[step - 1] if len(scores) >= step else math.inf  # fewer: read on
        more = [q for q, found in firsts.items() if len(found) == share and found[-1] < bound]

        async def rest(queue: str) -> None:
            scores.extend(await self.store.history.first_scores(queue, state, step, share, bound))

        if more:
            await each(more, rest)
            scores.sort()
        return scores[min(step, len(scores)) - 1]

    async def _queues(self, states: Sequence[str]) -> list[str]:
        found: set[str] = set()
        for state in states:
            found.update(await self.store.history.queues(state))
        return sorted(found)

    async def _by_jid(self, jid: str, queue: str | None, states: list[str]) -> list[HistoryEntry]:
        queues = [queue] if queue else await self._queues(FINAL_STATES)
        found = await self.store.history.find(queues, jid)
        entries = [self._entry(q, jid, entry) for q, entry in found]
        return sorted(
            (e for e in entries if e.state in states), key=lambda e: e.ended_at, reverse=True
        )

    async def _entries(self, chosen: list[tuple[str, str]]) -> list[HistoryEntry]:
        by_queue: dict[str, list[str]] = {}
        for queue, jid in chosen:
            by_queue.setdefault(queue, []).append(jid)
        read: dict[tuple[str, str], bytes] = {}

        async def entries(queue: str, jids: list[str]) -> None:
            for jid, entry in zip(jids, await self.store.history.entries(queue, jids), strict=True):
                if entry is not None:  # purged between the two reads
                    read[queue, jid] = entry

        await each(list(by_queue.items()), lambda pair: entries(*pair))
        return [self._entry(q, j, read[q, j]) for q, j in chosen if (q, j) in read]

    def _entry(self, queue: str, jid: str, raw: bytes) -> HistoryEntry:
        entry = archived_decoder.decode(raw)
        job = reported_decoder.decode(entry.job)
        failures = 0 if job.failure is None else int(job.failure.get("retry_count", 0)) + 1
        run = None
        if entry.reserved_until is not None:
            default, lowest, highest = self.settings().reservation
            reserved = min(max(job.reserve_for or default, lowest), highest)
            run = round(max(entry.at - (entry.reserved_until - reserved), 0.0), 6)
        return HistoryEntry(
            jid=jid,
            queue=queue,
            state=entry.state,
            jobtype=entry.jobtype,
            ended_at=format_time(entry.at),
            attempts=failures + (entry.state == "done"),
            job=entry.job,
            run_seconds=run,
            failure=job.failure,
            result=entry.result,
        )


def _states(state: str | list[str] | None) -> list[str]:
    asked = [state] if isinstance(state, str) else list(state or FINAL_STATES)
    for name in asked:
        if name not in FINAL_STATES:
            raise CommandError(
                f"HISTORY: not a final state: {name!r} (one of {', '.join(FINAL_STATES)})"
            )
    return list(dict.fromkeys(asked))


def _seconds(value: float | str, name: str) -> float:
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            raise CommandError(f"HISTORY {name} must be unix seconds or RFC 3339") from None
    return float(value)


def _cursor(cursor: str | None) -> tuple[bytes, str] | None:
    if cursor is None:
        return None
    score, sep, jid = cursor.partition("|")
    if not sep or not SCORE.fullmatch(score):  # a score as Redis writes it: finite, plain
        raise CommandError("HISTORY: not a cursor this broker gave")
    return score.encode(), jid
