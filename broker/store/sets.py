"""Moves between a queue's sorted sets and its line, for the loops and MUTATE: due jobs
enqueued, dead and finished ones purged, entries moved, removed or read in bounded steps.
Each move is one Lua script (see scripts/) that acts only on entries still as the caller read
them.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from hopper_broker.store.base import Redis, Script, Visit, text
from hopper_broker.store.jobs import Entry, JobStore
from hopper_broker.store.keys import DUE, FINISHED_MARK, JIDS, PUSHED_CHANNEL, QUEUES

ENQUEUE = Script("enqueue")
REMOVE = Script("remove")
MOVE = Script("move")
ENTRIES = Script("entries")
DUE_REFRESH = Script("due")


class SetStore:
    """Typed moves over the sorted sets of queues (scheduled, retries, dead, working,
    finished) and the due indexes."""

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.keys = jobs.keys

    # -- sorted sets --------------------------------------------------------------------------

    async def due_queues(self, zset: str, now: float, limit: int) -> list[str]:
        """Queues whose `zset` may have entries due at `now`, from the due index."""
        names = await self.redis.execute("ZRANGEBYSCORE", DUE[zset], "-inf", now, "LIMIT", 0, limit)
        return [text(n) for n in names]

    async def next_due(self, zset: str) -> float | None:
        """The earliest time in `zset`'s due index (None when it is empty)."""
        first = await self.redis.execute("ZRANGE", DUE[zset], 0, 0, "WITHSCORES")
        return float(first[1]) if first else None

    async def queues_with(self, zset: str) -> list[str]:
        """Every queue that has entries in its `zset` (from the due index)."""
        return [text(n) for n in await self.redis.execute("ZRANGE", DUE[zset], 0, -1)]

    async def enqueue_due(
        self, queue: str, zset: str, now: float, stamp: str, limit: int
    ) -> tuple[int, int]:
        """Move up to `limit` due jobs of `zset` onto the queue: (moved, selected); fewer
        selected than `limit` means nothing more is due."""
        moved, selected = await self._enqueue(queue, zset, stamp, ("due", now, limit))
        return int(moved), int(selected)

    async def requeue(
        self,
        queue: str,
        zset: str,
        stamp: str,
        entries: Sequence[Entry],
        expiries: dict[str, float],
    ) -> int:
        """Move the given entries (if still as read) onto the queue, each of `expiries`
        expiring then; returns how many moved."""
        if not entries:
            return 0
        selection = ("jids", *_pairs(entries))
        moved, _ = await self._enqueue(queue, zset, stamp, selection, expiries)
        return int(moved)

    async def _enqueue(
        self,
        queue: str,
        zset: str,
        stamp: str,
        selection: tuple[Any, ...],
        expiries: dict[str, float] | None = None,
    ) -> Any:
        k = self.keys(queue)
        visit = await self._visit(queue, zset, selection)
        told = msgspec.json.encode(expiries).decode() if expiries else ""
        return await self.redis.run(
            ENQUEUE,
            (
                k.jobs,
                k.zset(zset),
                k.queue,
                DUE[zset],
                QUEUES,
                JIDS,
                k.meta,
                k.prioritized,
                k.expiring,
            ),
            (PUSHED_CHANNEL, queue, stamp, told, *selection),
            visit,
        )

    async def _visit(self, queue: str, zset: str, selection: tuple[Any, ...]) -> Visit:
        """What a call that makes the due entry exact ('due', 'all') reads first (split mode)."""
        return None if selection[0] == "jids" else await self.redis.read_due([DUE[zset]], queue)

    async def remove_due(self, queue: str, zset: str, now: float, limit: int) -> int:
        """Delete up to `limit` due jobs of `zset`; returns how many (fewer than `limit`:
        nothing more is due)."""
        return await self._remove(queue, zset, ("due", now, limit))

    async def remove_first(self, queue: str, zset: str, limit: int) -> int:
        """Delete the first `limit` jobs of `zset`; returns how many."""
        return await self._remove(queue, zset, ("all", limit))

    async def remove(self, queue: str, zset: str, entries: Sequence[Entry]) -> int:
        """Delete the given entries of `zset` (if still as read); returns how many."""
        if not entries:
            return 0
        return await self._remove(queue, zset, ("jids", *_pairs(entries)))

    async def purge_finished(self, queue: str, before: float, limit: int) -> int:
        """Delete up to `limit` jobs that finished before `before`; returns how many."""
        return await self._remove(queue, "finished", ("due", before, limit))

    async def _remove(self, queue: str, zset: str, selection: tuple[Any, ...]) -> int:
        k = self.keys(queue)
        owner = FINISHED_MARK + queue if zset == "finished" else queue
        visit = await self._visit(queue, zset, selection)
        removed: int = await self.redis.run(
            REMOVE,
            (k.jobs, k.zset(zset), JIDS, DUE[zset], k.progress, k.final, k.expiring),
            (queue, owner, *selection),
            visit,
        )
        return removed

    async def move(
        self,
        queue: str,
        source: str,
        target: str,
        score: float,
        entries: Sequence[Entry],
        now: float,
        history: str,
    ) -> int:
        """Move the given entries (if still as read) to another set with a new score; `history`
        archives those moved to dead (see Config.history_mode)."""
        if not entries:
            return 0
        k = self.keys(queue)
        if self.redis.split:  # announced first: the jobs are there no earlier
            await self.redis.announce_due(DUE[target], score, queue)
        moved: int = await self.redis.run(
            MOVE,
            (k.zset(source), k.zset(target), DUE[target], k.expiring, k.jobs, JIDS),
            (queue, score, now, history, "jids", *_pairs(entries)),
        )
        return moved

    async def expired(self, queue: str, zset: str, now: float, limit: int) -> list[Entry]:
        """Up to `limit` entries of `zset` with a score <= now, earliest first, with payloads."""
        k = self.keys(queue)
        flat = await self.redis.run(ENTRIES, (k.zset(zset), k.jobs), (now, limit))
        return [(text(flat[i]), flat[i + 1], flat[i + 2] or None) for i in range(0, len(flat), 3)]

    async def refresh_due(self, queue: str, zset: str) -> None:
        """Make the queue's due index entry for `zset` exact."""
        visit = await self.redis.read_due([DUE[zset]], queue)
        await self.redis.run(DUE_REFRESH, (self.keys(queue).zset(zset), DUE[zset]), (queue,), visit)

    async def scan(self, queue: str, zset: str, cursor: int, count: int) -> tuple[int, list[Entry]]:
        """One ZSCAN step over a sorted set, with payloads: (next cursor, entries)."""
        k = self.keys(queue)
        next_cursor, flat = await self.redis.execute("ZSCAN", k.zset(zset), cursor, "COUNT", count)
        jids = flat[::2]
        payloads = await self.redis.execute("HMGET", k.jobs, *jids) if jids else []
        entries = [(text(j), s, p) for j, s, p in zip(jids, flat[1::2], payloads, strict=True)]
        return int(next_cursor), entries

    async def scores(self, queue: str, zset: str, jids: Sequence[str]) -> list[Entry]:
        """The entries of `jids` that are in the set, with their payloads."""
        k = self.keys(queue)
        found, payloads = await self.redis.execute_many(
            [("ZMSCORE", k.zset(zset), *jids), ("HMGET", k.jobs, *jids)]
        )
        entries = zip(jids, found, payloads, strict=True)
        return [(j, s, p) for j, s, p in entries if s is not None]


def _pairs(entries: Iterable[Entry]) -> list[Any]:
    flat: list[Any] = []
    for jid, score, _ in entries:
        flat += (jid, score)
    return flat
