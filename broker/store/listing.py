"""Read-only views for operators (JOB LIST, INFO's workers): pages of a queue's sorted sets
after a cursor, and the connected workers with the jobs they hold. Nothing here changes Redis;
every move still goes through the scripts (MUTATE claims exactly the entries it read)."""

from typing import Any

import msgspec

from hopper_broker.store import keys
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.jobs import Entry, JobStore
from hopper_broker.store.keys import CANCEL_MARK, WORKERS

LISTING = Script("listing")


class WorkerRecord(msgspec.Struct, frozen=True):
    """One registered worker process as Redis keeps it, with the jobs it holds now."""

    wid: str
    beat: float  # unix seconds of its last heartbeat
    state: str  # running, quiet or terminate
    info: bytes  # its first HELLO's JSON
    rss_kb: int
    connections: int
    held: list[tuple[str, str, bytes, bytes | None]]  # (queue, jid, expiry, payload)
    more: bool  # it may hold more than `held` shows


class ListingStore:
    """Plain reads behind the operators' listings."""

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.keys = jobs.keys

    async def page(
        self, queue: str, zset: str, descending: bool, after: tuple[bytes, str] | None, n: int
    ) -> list[Entry]:
        """Up to `n` entries of the queue's `zset` that come after `after` (score as Redis
        wrote it, jid) in score order (then jid), with their payloads (see listing.lua)."""
        k = self.keys(queue)
        score, jid = after or (b"", "")
        order = "desc" if descending else "asc"
        flat = await self.redis.run(LISTING, (k.zset(zset), k.jobs), (order, score, jid, n))
        return [(text(flat[i]), flat[i + 1], flat[i + 2] or None) for i in range(0, len(flat), 3)]

    async def workers(self, limit: int, held_limit: int) -> tuple[int, list[WorkerRecord]]:
        """(how many workers are registered, the `limit` that beat most recently in wid order,
        with up to about `held_limit` of the jobs each holds: those whose reservation is theirs
        now)."""
        total, wids = await self.redis.execute_many(
            [("ZCARD", WORKERS), ("ZRANGE", WORKERS, 0, limit - 1, "REV", "WITHSCORES")]
        )
        names = [text(w) for w in wids[::2]]
        commands: list[tuple[Any, ...]] = [("HGETALL", keys.worker(w)) for w in names]
        commands += [("SSCAN", keys.held(w), 0, "COUNT", held_limit) for w in names]
        replies = await self.redis.execute_many(commands)
        records = []
        for i, wid in enumerate(names):
            flat = replies[i]
            fields = {text(f): v for f, v in zip(flat[::2], flat[1::2], strict=True)}
            cursor, members = replies[len(names) + i]
            held = await self._held(wid, [text(m).partition(":") for m in members[:held_limit]])
            records.append(
                WorkerRecord(
                    wid=wid,
                    beat=float(wids[2 * i + 1]),
                    state=text(fields.get("state", b"running")),
                    info=fields.get("info", b"{}"),
                    rss_kb=int(fields.get("rss_kb", 0)),
                    connections=int(fields.get("connections", 0)),
                    held=held,
                    more=int(cursor) != 0 or len(members) > held_limit,
                )
            )
        return int(total), sorted(records, key=lambda record: record.wid)

    async def _held(
        self, wid: str, pairs: list[tuple[str, str, str]]
    ) -> list[tuple[str, str, bytes, bytes | None]]:
        """Of the (queue, :, jid) a worker's held set names, those it still holds."""
        commands: list[tuple[Any, ...]] = []
        for queue, _, jid in pairs:
            k = self.keys(queue)
            commands += [("HGET", k.holders, jid), ("ZSCORE", k.working, jid)]
            commands.append(("HGET", k.jobs, jid))
        replies = await self.redis.execute_many(commands)
        held = []
        for i, (queue, _, jid) in enumerate(pairs):
            holder, expiry, payload = replies[3 * i : 3 * i + 3]
            if holder is not None and text(holder).removeprefix(CANCEL_MARK) == wid and expiry:
                held.append((queue, jid, expiry, payload))
        return sorted(held)
