"""Queue-wide operations: the listed queues, pause flags, QUEUE REMOVE, FLUSH, and the figures
behind INFO."""

from collections.abc import Sequence
from typing import Any

from hopper_broker.store.address import ReplyError
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.jobs import JobStore
from hopper_broker.store.keys import DRAINING, DUE, JIDS, QUEUES, SETS, STATS

DRAIN = Script("drain")
FLUSH = Script("flush")
OLDEST = Script("oldest")
CONFIGURE = Script("configure")


class QueueStore:
    """Typed queue-wide operations for the manager."""

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.jobs = jobs

    async def listed(self) -> list[str]:
        """The queues INFO lists (those created by an enqueue and not removed), sorted."""
        return sorted(text(q) for q in await self.redis.execute("SMEMBERS", QUEUES))

    async def holding(self) -> list[str]:
        """Every queue that holds anything: listed, or with jobs in one of its sorted sets."""
        commands: list[tuple[Any, ...]] = [("SMEMBERS", QUEUES)]
        commands += [("ZRANGE", due, 0, -1) for due in DUE.values()]
        replies = await self.redis.execute_many(commands)
        return sorted({text(q) for reply in replies for q in reply})

    async def pause(self, queue: str, paused: bool, resume_at: float | None = None) -> None:
        """Pause (until `resume_at`, unix seconds, when given) or resume a queue."""
        meta = self.jobs.keys(queue).meta
        if not paused:
            await self.redis.execute("HDEL", meta, "paused", "resume_at")
        elif resume_at is None:
            await self.redis.execute_many(
                [("HDEL", meta, "resume_at"), ("HSET", meta, "paused", 1)]
            )
        else:
            await self.redis.execute("HSET", meta, "paused", 1, "resume_at", repr(resume_at))

    async def configure(self, queue: str, settings: dict[str, str | None]) -> None:
        """Set (or with None, clear) settings of a queue (see policy.queue_setting), in one
        step (configure.lua)."""
        if settings:
            pairs = [part for name, value in settings.items() for part in (name, value or "")]
            await self.redis.run(CONFIGURE, (self.jobs.keys(queue).meta,), pairs)

    async def settings(self, queues: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The settings of each queue that has any."""
        found = await self.redis.execute_many([("HGETALL", self.jobs.keys(q).meta) for q in queues])
        shown = {q: _settings(flat) for q, flat in zip(queues, found, strict=True)}
        return {q: settings for q, settings in shown.items() if settings}

    async def drain(self, on: bool) -> None:
        """The whole broker drains (PUSH refused everywhere) or stops draining."""
        await self.redis.execute(*(("SET", DRAINING, 1) if on else ("DEL", DRAINING)))

    async def expired(self) -> int:
        """How many jobs expired before they ran, ever."""
        return int(await self.redis.execute("HGET", STATS, "expired") or 0)

    async def push_limits(self, queue: str) -> str:
        """What the push script is to enforce: 'D' when the queue or the broker drains, else
        the queue's max_size ('' for none)."""
        (size, draining), everything = await self.redis.execute_many(
            [("HMGET", self.jobs.keys(queue).meta, "max_size", "draining"), ("EXISTS", DRAINING)]
        )
        return "D" if draining or everything else text(size or b"")

    async def draining(self) -> bool:
        return bool(await self.redis.execute("EXISTS", DRAINING))

    async def remove_waiting(self, queue: str, batch: int) -> tuple[int, int]:
        """Delete up to `batch` waiting jobs: (deleted, left waiting). With none left the queue
        is no longer listed and its settings go."""
        k = self.jobs.keys(queue)
        keys = (k.queue, k.jobs, JIDS, k.meta, QUEUES, k.progress, k.expiring, k.prioritized)
        with self.redis.whole():
            deleted, left = await self.redis.run(DRAIN, keys, (queue, batch))
            if self.redis.split and not left:  # unlisted by the script: did a job come since?
                waiting = [("LLEN", k.queue), ("ZCARD", k.prioritized), ("ZCARD", k.blocked)]
                await self._list_again(queue, [*waiting, ("HGET", k.meta, "laned")])
        return int(deleted), int(left)

    async def _list_again(self, queue: str, sizes: list[tuple[Any, ...]]) -> None:
        """Split mode's last step of a call that unlisted a queue: list it again if it holds
        jobs now (`sizes`, read from the queue's keys), pushed by another broker between the
        script and its second step (whose own listing may have come before the unlisting)."""
        if any(int(n or 0) for n in await self.redis.execute_many(sizes)):
            await self.redis.execute("SADD", QUEUES, queue)

    async def flush(self, queue: str, batch: int) -> int:
        """Delete up to `batch` jobs of the queue wherever they are; returns how many are left
        (0: the queue is gone entirely)."""
        k = self.jobs.keys(queue)
        keys = (k.jobs, k.queue, k.scheduled, k.retries, k.dead, k.working, k.meta, JIDS, QUEUES)
        dues = (DUE["scheduled"], DUE["retries"], DUE["dead"], DUE["working"])
        notes = (k.final, k.finished, DUE["finished"], k.progress)
        finals = (*notes, k.holders, k.expiring, k.prioritized, k.blocked)
        visit = await self.redis.read_due([*dues, DUE["finished"]], queue)
        with self.redis.whole():
            left: int = await self.redis.run(FLUSH, (*keys, *dues, *finals), (queue, batch), visit)
            if self.redis.split and not left:
                await self._list_again(queue, [("HLEN", k.jobs), ("HGET", k.meta, "laned")])
        return left

    async def forget_counters(self) -> None:
        await self.redis.execute("DEL", STATS)

    async def oldest(self, queue: str) -> list[bytes]:
        """The payloads of the jobs that may have waited longest (see oldest.lua)."""
        k = self.jobs.keys(queue)
        found = await self.redis.run(OLDEST, (k.queue, k.jobs, k.prioritized, k.meta), ())
        return [payload for payload in found if payload]

    async def counts(self, queues: Sequence[str]) -> tuple[dict[str, int], dict[str, int]]:
        """(jobs waiting in each queue: its list, its prioritized jobs and those in lanes;
        total size of each sorted set over every queue), in two round trips."""
        n = len(queues)
        commands: list[tuple[Any, ...]] = [("LLEN", self.jobs.keys(q).queue) for q in queues]
        commands += [("ZCARD", self.jobs.keys(q).prioritized) for q in queues]
        commands += [("HGET", self.jobs.keys(q).meta, "laned") for q in queues]
        commands += [("ZRANGE", DUE[name], 0, -1) for name in SETS]
        replies = await self.redis.execute_many(commands)
        sizes = {
            q: replies[i] + replies[n + i] + int(replies[2 * n + i] or 0)
            for i, q in enumerate(queues)
        }
        holders = dict(zip(SETS, replies[3 * n :], strict=True))
        cards: list[tuple[Any, ...]] = [
            ("ZCARD", self.jobs.keys(text(q)).zset(name)) for name in SETS for q in holders[name]
        ]
        found = iter(await self.redis.execute_many(cards))
        sets = {name: sum(next(found) for _ in holders[name]) for name in SETS}
        return sizes, sets

    async def paused(self, queues: Sequence[str]) -> list[str]:
        flags = await self.redis.execute_many(
            [("HEXISTS", self.jobs.keys(q).meta, "paused") for q in queues]
        )
        return [q for q, flag in zip(queues, flags, strict=True) if flag]

    async def counters(self, day: str) -> dict[str, int]:
        """processed, failures, and the same for `day`: the broker-wide totals."""
        fields = ("processed", "failures", f"processed:{day}", f"failures:{day}")
        values = await self.redis.execute("HMGET", STATS, *fields)
        return {f: int(v or 0) for f, v in zip(fields, values, strict=True)}

    async def used_memory(self) -> int:
        """Redis's used_memory, every master's together on a cluster."""
        used = 0
        for info in await self.redis.pipeline.on_every_master("INFO", "memory"):
            if isinstance(info, ReplyError):
                raise info
            for line in text(info).splitlines():
                if line.startswith("used_memory:"):
                    used += int(line.split(":", 1)[1])
        return used


# the meta fields INFO shows (not the rates' bookkeeping, nor notes for the scripts)
SETTINGS = (
    "paused",
    "resume_at",
    "max_size",
    "draining",
    "concurrency",
    "rate",
    "burst",
    "worker_concurrency",
    "group_concurrency",
    "group_rate",
    "group_burst",
)
JOBTYPE_MARK = "t:"  # meta fields t:<jobtype>:<limit> hold jobtype limits


def _settings(flat: list[bytes]) -> dict[str, Any]:
    """A queue's settings from its meta hash, jobtype limits under `jobtypes`."""
    found = {text(k): text(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
    shown: dict[str, Any] = {name: found[name] for name in SETTINGS if name in found}
    for name, value in found.items():
        if name.startswith(JOBTYPE_MARK):
            jobtype, _, limit = name[len(JOBTYPE_MARK) :].rpartition(":")
            shown.setdefault("jobtypes", {}).setdefault(jobtype, {})[limit] = value
    return shown
