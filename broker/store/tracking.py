"""Jobs by jid: what the store holds of one (JOB STATE, TRACK GET), what a job says of itself
(TRACK SET, JOB LOG), the notes of JOB WAITs, JOB CANCEL, and which reservations a worker still
holds (BEAT with jids). Each change is one Lua script (see scripts/)."""

from collections.abc import Sequence

import msgspec

from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.jobs import JobStore, holder_of
from hopper_broker.store.keys import (
    AWAITED,
    CANCEL_MARK,
    DUE,
    FINISHED_CHANNEL,
    FINISHED_MARK,
    JIDS,
)

STATE = Script("state")
PROGRESS = Script("progress")
CANCEL = Script("cancel")
MARK = FINISHED_MARK.encode()


class Found(msgspec.Struct, frozen=True):
    """What the store holds of one jid in one queue, read in one step."""

    payload: bytes | None  # the record
    place: str  # queue, working, scheduled, retries, dead, finished; '' when none
    score: bytes | None  # in that sorted set (for finished: when it finished)
    note: bytes | None  # a finished job's state (if not done) and result
    progress: bytes | None
    holder: bytes | None  # a reserved job's holders entry (see keys.py)


class TrackingStore:
    """Typed by-jid operations."""

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.jobs = jobs

    async def owner(self, jid: str) -> tuple[str, bool] | None:
        """The queue of a live or kept finished job, and whether it finished; None if neither."""
        name = await self.redis.execute("HGET", JIDS, jid)
        if name is None:
            return None
        return (text(name[1:]), True) if name.startswith(MARK) else (text(name), False)

    async def find(self, queue: str, jid: str) -> Found:
        """What the queue holds of `jid`, live or finished, read in one step."""
        k = self.jobs.keys(queue)
        where = (k.jobs, k.working, k.scheduled, k.retries, k.dead, k.finished, k.final, k.progress)
        reply = await self.redis.run(STATE, (*where, k.holders, k.blocked), (jid,))
        payload, place, score, note, progress, holder = (r or None for r in reply)
        return Found(payload, text(place or b""), score, note, progress, holder)

    async def progress(
        self,
        queue: str,
        jid: str,
        now: str,
        *,
        percent: int | None = None,
        desc: bytes = b"",
        line: bytes = b"",
        most_lines: int = 0,
        reserve_until: float | None = None,
    ) -> bool:
        """Record progress (`desc` and `line` as JSON strings) and extend the reservation;
        False for a job the queue does not hold."""
        k = self.jobs.keys(queue)
        args = (
            jid,
            now,
            "" if percent is None else percent,
            desc,
            line,
            most_lines,
            "" if reserve_until is None else reserve_until,
            queue,
        )
        return bool(await self.redis.run(PROGRESS, (k.jobs, k.progress, k.working), args))

    async def await_(self, jid: str, until: float) -> None:
        """Note that a JOB WAIT waits for `jid` until `until` (its finish is then published)."""
        await self.redis.execute("ZADD", AWAITED, "GT", until, jid)

    async def forget_awaited(self, now: float) -> int:
        """Drop the notes of waits that are over."""
        removed: int = await self.redis.execute("ZREMRANGEBYSCORE", AWAITED, "-inf", now)
        return removed

    async def cancel(self, queue: str, jid: str, now: float, keep: str) -> str:
        """Cancel a job of `queue`: 'cancelled' (it will not run), 'cancelling' (its worker is
        asked to stop it), or '' (nothing to cancel: dead, finished or gone)."""
        k = self.jobs.keys(queue)
        where = (k.jobs, k.queue, k.working, k.scheduled, k.retries, k.holders, JIDS)
        notes = (k.final, k.finished, DUE["finished"], k.progress, AWAITED)
        finals = (*notes, k.dead, k.expiring, k.prioritized, k.meta)
        reply = await self.redis.run(
            CANCEL, (*where, *finals), (queue, jid, now, keep, FINISHED_CHANNEL)
        )
        return text(reply)

    async def held(self, queue: str, jids: Sequence[str]) -> list[tuple[bool, str, bool]]:
        """For each jid of `queue`: (reserved, its holder's wid or '', cancel asked for)."""
        k = self.jobs.keys(queue)
        expiries, holders = await self.redis.execute_many(
            [("ZMSCORE", k.working, *jids), ("HMGET", k.holders, *jids)]
        )
        mark = CANCEL_MARK.encode()
        return [
            (expiry is not None, holder_of(holder), holder is not None and holder.startswith(mark))
            for expiry, holder in zip(expiries, holders, strict=True)
        ]
