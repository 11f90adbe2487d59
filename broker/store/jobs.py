"""Job moves: each one Lua script (see scripts/) over a queue's keys and the global indexes.

This module holds no lifecycle rules: the manager decides where a job goes, these calls say
which keys a move touches and decode the replies.
"""

from collections.abc import Sequence
from typing import Any

import msgspec

from hopper_broker.policy import Unique
from hopper_broker.store import keys
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.keys import (
    AWAITED,
    CANCEL_MARK,
    CRON,
    DUE,
    DUE_TALLIES,
    FINISHED_CHANNEL,
    FINISHED_MARK,
    HOLDING,
    JIDS,
    PUSHED_CHANNEL,
    QUEUES,
    STATS,
    WORKERS,
    QueueKeys,
    held,
)
from hopper_broker.store.workflows import WorkflowStore, dependencies
from hopper_client.schema.jobs import encode, format_day, job_decoder

PUSH = Script("push")
CLAIM = Script("claim")
PUSH_GRAPH = Script("push_graph")
FETCH = Script("fetch")
ACK = Script("ack")
FAIL = Script("fail")
RELEASE = Script("release")
RENAME = Script("rename")

MAX_KEY_CACHE = 10_000  # QueueKeys kept for reuse; the cache starts over beyond it
MAX_RENAMES = 100  # new jids tried for a job whose jid another queue's job also has
MARK = FINISHED_MARK.encode()

Entry = tuple[str, bytes, bytes | None]  # jid, score as Redis wrote it, payload (None: no record)
# jid, payload, at score or '', unique lock, when it expires (None: never), batch: (bid, kind)
# with kind '' for a job of the batch, 'complete' or 'success' for its callback (None: none),
# its dependencies: '' or JSON [policy, jid, ...] (workflows, see scripts/lib_workflows.lua)
PushEntry = tuple[str, bytes, str, Unique | None, float | None, tuple[str, str] | None, str]
PUSH_KEYS = 18  # the push script's fixed KEYS; unique locks follow
SPLIT_GRAPH = 10  # push_graph()'s result for every job in split mode
TALLY_SWEEP = 10.0  # seconds from a push of a batch's job until the batches loop looks at the
# queue's tallies (split mode; lib_batches.lua), and between its looks while the queue has some


class Acked(msgspec.Struct, frozen=True):
    """A job a worker reports done: its jid, its queue if known, its result JSON (or b'') and
    the reporting connection's worker id (or '')."""

    jid: str
    queue: str | None
    result: bytes
    wid: str


class Reservation(msgspec.Struct, frozen=True):
    """A reserved job as read: its expiry (as Redis wrote it), stored payload and holder."""

    expiry: bytes
    payload: bytes | None
    holder: str = ""  # the wid of the worker holding it ('' for none)


class JobStore:
    """Typed job moves for the manager."""

    def __init__(self, redis: Redis, workflows: WorkflowStore) -> None:
        self.redis = redis
        self.workflows = workflows
        self._keys: dict[str, QueueKeys] = {}

    def keys(self, queue: str) -> QueueKeys:
        found = self._keys.get(queue)
        if found is None:
            if len(self._keys) >= MAX_KEY_CACHE:
                self._keys.clear()
            found = self._keys[queue] = QueueKeys(queue)
        return found

    # -- the hot path -------------------------------------------------------------------------

    async def push(
        self,
        queue: str,
        entries: Sequence[PushEntry],
        now: float,
        keep: str,
        claim: tuple[str, float] | None = None,
        limits: str = "",
        graph: bool = False,
    ) -> list[tuple[int, str]]:
        """Store jobs of one queue (see PushEntry). Each result: 1 stored, 0 jid already live,
        2 not unique, 4 the queue is full, 6 no such batch, 3 a batch callback that may not be
        pushed (already pushed, or no longer due); all 3 when
        `claim` (a cron entry id and tick) was already made for that tick or a later one, all
        5 when `limits` is 'D' (draining); otherwise `limits` is the queue's max_size ('' for
        none). Each comes with the jid it names ('' but for 7 unknown dependency, 8 dependency
        failed). A `graph` is stored all or nothing (9: refused with another job)."""
        claimed = "" if claim is None else f"{claim[0]} {claim[1]!r}"
        keys_, args = self._push_call(queue, entries, now, keep, claimed, limits, graph)
        if not self.redis.split:
            return _push_results(await self.redis.run(PUSH, keys_, args))
        with self.redis.whole():  # a claim is not left without its push
            args[8] = await self._claim(queue, entries, graph, now)
            stored = await self.redis.run(PUSH, keys_, args)
        return _push_results(stored)

    async def _claim(
        self, queue: str, entries: Sequence[PushEntry], graph: bool, now: float
    ) -> str:
        """Split mode's first step of a push (scripts/claim.lua): the jids claimed, the queue
        listed and its due entry for its earliest scheduled job added; the claims as push.lua
        takes them, with each job's batch judged and its dependencies in other queues told
        (WorkflowStore.register)."""
        earliest = min((float(entry[2]) for entry in entries if entry[2]), default=None)
        due = "" if earliest is None else repr(earliest)
        batches = [" ".join(e[5]).rstrip() if e[5] is not None else "" for e in entries]
        deps = dict.fromkeys(dep for entry in entries for dep in dependencies(entry[6]))
        sweep = repr(now + TALLY_SWEEP) if any(batches) or deps else ""
        claims: bytes = await self.redis.run(
            CLAIM,
            (JIDS, QUEUES, DUE["scheduled"], DUE_TALLIES),
            (queue, due, sweep, len(entries), *(e[0] for e in entries), *batches, *deps),
        )
        if not deps:
            return text(claims)
        dependants = [(entry[0], entry[6]) for entry in entries if entry[6]]
        return await self.workflows.register(queue, dependants, text(claims), sweep)

    async def push_graph(
        self, segments: Sequence[tuple[str, Sequence[PushEntry], str]], now: float, keep: str
    ) -> list[tuple[int, str]]:
        """Store a workflow whose jobs are in several queues, all or nothing: `segments` are
        (queue, its jobs, its limits as for push()); the results, in the segments' order, are
        push()'s (9: refused with another job); in split mode, where one script cannot span
        their slots, every job is refused (SPLIT_GRAPH)."""
        if self.redis.split:
            return [(SPLIT_GRAPH, "")] * sum(len(entries) for _, entries, _ in segments)
        keys_: list[str] = []
        sizes: list[int] = []
        args: list[Any] = []
        for queue, entries, limits in segments:
            more_keys, more_args = self._push_call(queue, entries, now, keep, "", limits, False)
            keys_ += more_keys
            args += more_args
            sizes += (len(more_keys), len(more_args))
        return _push_results(
            await self.redis.run(PUSH_GRAPH, keys_, (len(segments), *sizes, *args))
        )

    def _push_call(
        self,
        queue: str,
        entries: Sequence[PushEntry],
        now: float,
        keep: str,
        claimed: str,
        limits: str,
        graph: bool,
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of push_queue() (scripts/lib_push.lua) for jobs of one queue."""
        k = self.keys(queue)
        locks: list[str] = []
        args: list[Any] = [PUSHED_CHANNEL, queue, claimed, keep, FINISHED_CHANNEL, now, limits]
        args += ("G" if graph else "", "")  # the claims ('' on one Redis): see push()
        for jid, payload, at, unique, expires, batch, after in entries:
            spec = joins = ""
            if unique is not None:
                locks.append(k.unique(unique.digest))
                spec = f"{PUSH_KEYS + len(locks)} {unique.ttl_ms} {unique.mode}"
            if batch is not None:
                locks.append(keys.batch(batch[0]))
                joins = f"{PUSH_KEYS + len(locks)} {batch[1]}".rstrip()
            expiry = "" if expires is None else repr(expires)
            args += (jid, payload, at, spec, expiry, joins, after)
        keys_ = [
            k.jobs,
            k.queue,
            k.scheduled,
            JIDS,
            DUE["scheduled"],
            QUEUES,
            k.finished,
            k.final,
            k.progress,
            k.working,
            k.retries,
            k.dead,
            DUE["finished"],
            AWAITED,
            k.cron if self.redis.split else CRON,  # the tick claims (split: the queue's own)
            k.meta,
            k.prioritized,
            k.expiring,
            *locks,
        ]
        return keys_, args

    async def fetch(
        self,
        queue: str,
        now: float,
        reserve: tuple[int, int, int],
        count: int = 1,
        wid: str = "",
        keep: str = "0",
    ) -> tuple[list[tuple[str, bytes]], float | None]:
        """Reserve up to `count` of the oldest jobs of `queue` for worker `wid` (or for a
        connection that is no worker): ([(jid, payload)], oldest first; when the queue's
        limits held jobs back, seconds until it may give more, else None). Expired jobs are
        not handed out: they end expired (`keep`: the keep policy, Manager.kept).

        Empty when the queue is paused or empty.
        """
        k = self.keys(queue)
        if self.redis.split:  # announced first: a reservation expires no later than this
            await self.redis.announce_due(DUE["working"], now + reserve[1], queue)
        where = (k.jobs, k.queue, k.working, k.meta, DUE["working"], k.holders, held(wid))
        finals = (k.expiring, STATS, k.final, k.finished, DUE["finished"], JIDS, k.progress)
        flat = await self.redis.run(
            FETCH,
            (*where, *finals, AWAITED, k.prioritized, WORKERS, HOLDING),
            (now, *reserve, count, queue, wid, keep, FINISHED_CHANNEL),
        )
        if len(flat) % 2:
            return [], float(flat[0])
        return [(text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)], None

    async def ack(
        self, queue: str, acks: Sequence[Acked], day: str, now: float, keep: str
    ) -> tuple[list[str], int]:
        """Finish reserved jobs of one queue, kept and archived as `keep` says (Manager.kept).
        Returns the jids whose reservation existed, and how many batch callbacks came due."""
        k = self.keys(queue)
        workers: dict[str, int] = {}  # wid -> its held set's place after the first 11 keys
        places = [workers.setdefault(ack.wid, len(workers) + 1) if ack.wid else 0 for ack in acks]
        args: list[Any] = [day, queue, now, keep, FINISHED_CHANNEL, len(acks)]
        args += (ack.jid for ack in acks)
        args += places
        for position, ack in enumerate(acks, 1):
            if ack.result:
                args += (position, ack.result)
        done, due = await self.redis.run(
            ACK,
            (
                k.jobs,
                k.working,
                JIDS,
                STATS,
                k.final,
                k.finished,
                DUE["finished"],
                k.progress,
                AWAITED,
                k.holders,
                k.meta,
                *(held(wid) for wid in workers),
            ),
            args,
        )
        return [text(jid) for jid in done], int(due)

    # -- failures -----------------------------------------------------------------------------

    async def reservation(self, queue: str, jid: str) -> Reservation | None:
        """The reservation of a job, its payload and holder, read together; None if not
        reserved."""
        return (await self.reservations(queue, [jid]))[0]

    async def reservations(self, queue: str, jids: Sequence[str]) -> list[Reservation | None]:
        """`reservation()` of each jid, all read in one round trip."""
        k = self.keys(queue)
        expiries, payloads, holders = await self.redis.execute_many(
            [("ZMSCORE", k.working, *jids), ("HMGET", k.jobs, *jids), ("HMGET", k.holders, *jids)]
        )
        return [
            None if expiry is None else Reservation(expiry, payload, holder_of(holder))
            for expiry, payload, holder in zip(expiries, payloads, holders, strict=True)
        ]

    async def holders(self, queue: str, jids: Sequence[str]) -> list[str]:
        """The worker holding each job of `jids` ('' for none)."""
        if not jids:  # HMGET needs a field
            return []
        found = await self.redis.execute("HMGET", self.keys(queue).holders, *jids)
        return [holder_of(h) for h in found]

    async def fail(
        self,
        queue: str,
        jid: str,
        read_expiry: bytes | None,
        day: str,
        target: str,
        score: float,
        payload: bytes,
        now: float,
        keep: str,
        holder: str = "",
        errtype: str = "",
        expires: float | None = None,
    ) -> int:
        """End a reservation other than by ACK; target is 'retries', 'dead', 'scheduled' (a
        snooze, not a failure) or '' (discard the job, kept finished like a done one, as
        `keep` says). A job whose cancel was asked for ends cancelled instead.

        `read_expiry` is the reservation the new payload was computed from (None: any), and
        `holder` the worker that held it then ('' unknown); `errtype` goes with the event.
        Returns 1 done, 0 not reserved, -1 the reservation changed since it was read; when a
        batch callback came due, the store's `on_batch_due` is called.
        """
        k = self.keys(queue)
        if self.redis.split and target:  # announced first: the job is there no earlier
            await self.redis.announce_due(DUE[target], score, queue)
        keys_ = (k.jobs, k.working, k.retries, k.dead, JIDS, STATS, DUE["retries"], DUE["dead"])
        finals = (k.final, k.finished, DUE["finished"], k.progress, AWAITED)
        others = (k.holders, held(holder), k.scheduled, DUE["scheduled"], k.expiring, k.meta)
        args = (queue, jid, read_expiry or "", day, target, score, payload, now, keep)
        result: int = await self.redis.run(
            FAIL,
            (*keys_, *finals, *others),
            (*args, FINISHED_CHANNEL, holder, errtype, "" if expires is None else repr(expires)),
        )
        if result == 2:
            self.redis.on_batch_due()
            return 1
        return result

    async def drop(self, queue: str, jid: str, now: float, keep: str, holder: str) -> int:
        """End a reservation for good, as a fetch Discard does: the job ends discarded, or
        cancelled when that was asked for (see fail())."""
        return await self.fail(queue, jid, None, format_day(now), "", 0, b"", now, keep, holder)

    async def release(self, queue: str, jid: str, expires: float | None = None) -> int:
        """Put a reserved job back at the head of its queue (with its expiry, if any): 1 done,
        0 not reserved, 2 not done because a cancel was asked for (end it with fail())."""
        k = self.keys(queue)
        if self.redis.split:  # listed first: FLUSH and INFO find what goes back
            await self.redis.execute("SADD", QUEUES, queue)
        where = (k.working, k.queue, QUEUES, k.holders, k.expiring, k.meta, k.jobs, k.prioritized)
        args = (jid, queue, "" if expires is None else repr(expires))
        released: int = await self.redis.run(RELEASE, where, args)
        return released

    # -- by jid -------------------------------------------------------------------------------

    async def payload(self, queue: str, jid: str) -> bytes | None:
        found: bytes | None = await self.redis.execute("HGET", self.keys(queue).jobs, jid)
        return found

    async def rename(self, queue: str, jid: str) -> str | None:
        """Give the job `jid` of the queue the jid `<jid>-<queue>` (`<jid>-<queue>-N` when that
        is taken), wherever it is: for a jid that also names a job of another queue. Returns
        the new jid, or None when the job is gone."""
        k = self.keys(queue)
        places = (k.jobs, k.queue, k.working, k.scheduled, k.retries, k.dead)
        where = (*places, JIDS, k.holders, k.expiring, k.prioritized, k.meta)
        for attempt in range(MAX_RENAMES):
            payload = await self.payload(queue, jid)
            if payload is None:
                return None
            job = job_decoder.decode(payload)
            job.jid = f"{jid}-{queue}" + (f"-{attempt}" if attempt else "")
            with self.redis.whole():  # a claim is not left without its rename
                claimed = ""  # split mode: the new jid claimed first, on the global keys
                if self.redis.split:
                    claimed = str(await self.redis.execute("HSETNX", JIDS, job.jid, queue))
                    if claimed == "0":
                        continue
                args = (queue, jid, job.jid, encode(job), claimed)
                if await self.redis.run(RENAME, where, args):
                    return job.jid
                if claimed == "1":  # given back
                    await self.redis.global_step("index_swap", JIDS, job.jid, queue, "")
        return None

    async def queues_of(self, jids: Sequence[str]) -> list[str | None]:
        """The queue of each jid, from the jid index (None for no live job)."""
        names = await self.redis.execute("HMGET", keys.JIDS, *jids)
        return [None if n is None or n.startswith(MARK) else text(n) for n in names]


def holder_of(value: bytes | None) -> str:
    """The wid a holders entry names ('' for none), without its cancel mark."""
    return "" if value is None else text(value).removeprefix(CANCEL_MARK)


def _push_results(results: list[Any]) -> list[tuple[int, str]]:
    """push_queue()'s results: a code, or {code, the jid it names}."""
    return [(int(r[0]), text(r[1])) if isinstance(r, list) else (int(r), "") for r in results]
