"""Job moves: each one Lua script (see scripts/) over a queue's keys and the global indexes.

This module holds no lifecycle rules: the manager decides where a job goes, these calls say
which keys a move touches and decode the replies.
"""

from collections.abc import Sequence
from typing import Any

import msgspec

from hopper_broker.store import keys
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.keys import (
    AWAITED,
    CANCEL_MARK,
    DUE,
    FINISHED_CHANNEL,
    FINISHED_MARK,
    HOLDING,
    JIDS,
    QUEUES,
    STATS,
    WORKERS,
    QueueKeys,
    held,
)
from hopper_client.schema.jobs import encode, format_day, job_decoder

FETCH = Script("fetch")
ACK = Script("ack")
FAIL = Script("fail")
RELEASE = Script("release")
RENAME = Script("rename")

MAX_KEY_CACHE = 10_000  # QueueKeys kept for reuse; the cache starts over beyond it
MAX_RENAMES = 100  # new jids tried for a job whose jid another queue's job also has
MARK = FINISHED_MARK.encode()

Entry = tuple[str, bytes, bytes | None]  # jid, score as Redis wrote it, payload (None: no record)


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

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._keys: dict[str, QueueKeys] = {}

    def keys(self, queue: str) -> QueueKeys:
        found = self._keys.get(queue)
        if found is None:
            if len(self._keys) >= MAX_KEY_CACHE:
                self._keys.clear()
            found = self._keys[queue] = QueueKeys(queue)
        return found

    # -- the hot path (PUSH: pushes.py) -------------------------------------------------------

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
