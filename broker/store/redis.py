"""The only module that talks to Redis: typed operations over keys and Lua scripts.

Every move of a job between sets is one script call (see scripts/); this module holds no
lifecycle rules, it only says which keys a move touches and decodes the replies.
"""

import hashlib
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

from broker.store import keys
from broker.store.connection import Pipeline, ReplyError
from broker.store.keys import QueueKeys

FLUSH_BATCH = 1000  # keys per SCAN step of FLUSH
WORKER_KEYS = keys.WORKERS.encode()


class Script:
    """A Lua script from scripts/, called by its SHA1 and loaded on NOSCRIPT."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("broker.store").joinpath(f"scripts/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


PUSH = Script("push")
FETCH = Script("fetch")
ACK = Script("ack")
FAIL = Script("fail")
RELEASE = Script("release")
ENQUEUE = Script("enqueue")
REMOVE = Script("remove")
MOVE = Script("move")
DRAIN = Script("drain")
OLDEST = Script("oldest")
BEAT = Script("beat")
WORKER_JOIN = Script("worker_join")
WORKER_LEAVE = Script("worker_leave")


def _text(value: bytes) -> str:
    return value.decode()


class QueueCounts:
    """Sizes and counters of one queue, as read for INFO."""

    __slots__ = ("counters", "sets", "size")

    def __init__(self, size: int, sets: dict[str, int], counters: dict[str, int]) -> None:
        self.size = size
        self.sets = sets
        self.counters = counters


class Store:
    """Typed Redis operations for the manager, over one auto-pipelining connection."""

    def __init__(self, redis: Pipeline) -> None:
        self.redis = redis
        self._keys: dict[str, QueueKeys] = {}

    def keys(self, queue: str) -> QueueKeys:
        found = self._keys.get(queue)
        if found is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            found = self._keys[queue] = QueueKeys(queue)
        return found

    async def execute(self, *args: Any) -> Any:
        reply = await self.redis.execute(*args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def _run(
        self, script: Script, keys_: Sequence[str], args: Sequence[Any], *extra: tuple[Any, ...]
    ) -> Any:
        """Call a script (and any extra commands in the same write); return the script's reply."""
        command = ("EVALSHA", script.sha, len(keys_), *keys_, *args)
        replies = await self.redis.execute_many([command, *extra])
        reply = replies[0]
        if isinstance(reply, ReplyError) and reply.reply.startswith("NOSCRIPT"):
            reply = await self.redis.execute("EVAL", script.source, len(keys_), *keys_, *args)
        for r in [*replies[1:], reply]:
            if isinstance(r, ReplyError):
                raise r
        return reply

    # -- jobs ---------------------------------------------------------------------------------

    async def push(
        self, queue: str, entries: Sequence[tuple[str, bytes, str]], *, new_queue: bool
    ) -> list[bool]:
        """Store jobs of one queue: (jid, payload, at score or ''). False = jid already live."""
        k = self.keys(queue)
        args: list[Any] = [keys.PUSHED_CHANNEL, queue]
        index: list[Any] = ["HSET", keys.INDEX]
        for jid, payload, at in entries:
            args += (jid, payload, at)
            index += (jid, queue)
        extra: list[tuple[Any, ...]] = [tuple(index)]
        if new_queue:
            extra.append(("SADD", keys.QUEUES, queue))
        results = await self._run(PUSH, (k.jobs, k.queue, k.scheduled), args, *extra)
        return [bool(r) for r in results]

    async def fetch(
        self, queue: str, now: float, reserve: tuple[int, int, int], count: int = 1
    ) -> list[tuple[str, bytes]]:
        """Reserve up to `count` of the oldest jobs of `queue`: [(jid, payload)], oldest first.

        Empty when the queue is paused or empty.
        """
        k = self.keys(queue)
        flat = await self._run(
            FETCH, (k.jobs, k.queue, k.working, k.paused), (now, *reserve, count)
        )
        return [(_text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def ack(self, queue: str, jids: Sequence[str], day: str) -> list[str]:
        """Finish reserved jobs of one queue; returns the jids whose reservation existed."""
        k = self.keys(queue)
        done = await self._run(ACK, (k.jobs, k.working, k.stats), (day, *jids))
        if done:
            self.redis.post("HDEL", keys.INDEX, *done)
        return [_text(jid) for jid in done]

    async def fail(
        self,
        queue: str,
        jid: str,
        day: str,
        payload: bytes,
        target: str,
        score: float,
        latest_expiry: float | None = None,
    ) -> bool:
        """End a reservation as a failure; target is 'retries', 'dead' or '' (drop the job)."""
        k = self.keys(queue)
        expiry = "" if latest_expiry is None else latest_expiry
        done = bool(
            await self._run(
                FAIL,
                (k.jobs, k.working, k.stats, k.retries, k.dead),
                (jid, day, payload, target, score, expiry),
            )
        )
        if done and not target:
            self.redis.post("HDEL", keys.INDEX, jid)
        return done

    async def requeue_reserved(self, queue: str, jid: str) -> bool:
        """Put a reserved job back at the head of its queue."""
        k = self.keys(queue)
        return bool(await self._run(RELEASE, (k.working, k.queue), (jid,)))

    async def job(self, queue: str, jid: str) -> bytes | None:
        payload: bytes | None = await self.execute("HGET", self.keys(queue).jobs, jid)
        return payload

    async def queue_of(self, jid: str) -> str | None:
        return (await self.queues_of([jid]))[0]

    async def queues_of(self, jids: Sequence[str]) -> list[str | None]:
        """The queue of each jid, from the jid index (None for unknown jids)."""
        names = await self.execute("HMGET", keys.INDEX, *jids)
        return [None if name is None else _text(name) for name in names]

    async def due(
        self, queue: str, zset: str, now: float, limit: int
    ) -> list[tuple[str, bytes | None]]:
        """Up to `limit` jobs of a sorted set whose score is <= now, with their payloads."""
        k = self.keys(queue)
        jids = await self.execute("ZRANGEBYSCORE", k.zset(zset), "-inf", now, "LIMIT", 0, limit)
        return await self._with_payloads(k, jids)

    async def scan(
        self, queue: str, zset: str, cursor: int, count: int
    ) -> tuple[int, list[tuple[str, bytes | None]]]:
        """One ZSCAN step over a sorted set: (next cursor, [(jid, payload)])."""
        k = self.keys(queue)
        next_cursor, flat = await self.execute("ZSCAN", k.zset(zset), cursor, "COUNT", count)
        return int(next_cursor), await self._with_payloads(k, flat[::2])

    async def members(self, queue: str, zset: str, jids: Sequence[str]) -> list[str]:
        """Which of `jids` are in the sorted set."""
        if not jids:
            return []
        scores = await self.execute("ZMSCORE", self.keys(queue).zset(zset), *jids)
        return [jid for jid, score in zip(jids, scores, strict=True) if score is not None]

    async def _with_payloads(
        self, k: QueueKeys, jids: list[bytes]
    ) -> list[tuple[str, bytes | None]]:
        if not jids:
            return []
        payloads = await self.execute("HMGET", k.jobs, *jids)
        return [(_text(j), p) for j, p in zip(jids, payloads, strict=True)]

    async def enqueue(self, queue: str, zset: str, pairs: Iterable[tuple[str, bytes]]) -> int:
        """Move jobs from a sorted set onto their queue; payload b'' keeps the stored record."""
        k = self.keys(queue)
        args: list[Any] = [keys.PUSHED_CHANNEL, queue]
        for jid, payload in pairs:
            args += (jid, payload)
        if len(args) == 2:
            return 0
        moved: int = await self._run(ENQUEUE, (k.jobs, k.zset(zset), k.queue), args)
        return moved

    async def remove(self, queue: str, zset: str, jids: Sequence[str]) -> int:
        """Delete jobs that are in a sorted set; returns how many were removed."""
        if not jids:
            return 0
        k = self.keys(queue)
        removed = await self._run(REMOVE, (k.jobs, k.zset(zset)), jids)
        if removed:
            await self.execute("HDEL", keys.INDEX, *removed)
        return len(removed)

    async def move(
        self, queue: str, source: str, target: str, score: float, jids: Sequence[str]
    ) -> int:
        """Move jobs between two sorted sets of a queue with a new score."""
        if not jids:
            return 0
        k = self.keys(queue)
        moved: int = await self._run(MOVE, (k.zset(source), k.zset(target)), (score, *jids))
        return moved

    async def clear(self, queue: str, zset: str) -> int:
        """Delete every job of a sorted set, in batches."""
        total = 0
        k = self.keys(queue)
        while jids := await self.execute("ZRANGE", k.zset(zset), 0, 499):
            total += await self.remove(queue, zset, [_text(j) for j in jids])
        return total

    # -- queues -------------------------------------------------------------------------------

    async def known_queues(self) -> list[str]:
        return sorted(_text(q) for q in await self.execute("SMEMBERS", keys.QUEUES))

    async def pause(self, queue: str, paused: bool) -> None:
        k = self.keys(queue)
        if paused:
            await self.execute("SET", k.paused, 1)
        else:
            await self.execute("DEL", k.paused)

    async def paused(self, queues: Sequence[str]) -> list[str]:
        flags = await self.redis.execute_many([("EXISTS", self.keys(q).paused) for q in queues])
        return [q for q, flag in zip(queues, flags, strict=True) if flag]

    async def drop_queue(self, queue: str, batch: int) -> int:
        """Delete a queue's waiting jobs (in batches) and forget the queue."""
        k = self.keys(queue)
        total = 0
        while jids := await self._run(DRAIN, (k.queue, k.jobs, k.paused), (batch,)):
            await self.execute("HDEL", keys.INDEX, *jids)
            total += len(jids)
        await self.execute("SREM", keys.QUEUES, queue)
        return total

    async def oldest(self, queue: str) -> bytes | None:
        k = self.keys(queue)
        payload: bytes | None = await self._run(OLDEST, (k.queue, k.jobs), ())
        return payload

    async def counts(self, queues: Sequence[str], day: str) -> dict[str, QueueCounts]:
        """Queue length, set sizes and counters of each queue, in one round trip."""
        fields = ("processed", "failures", f"processed:{day}", f"failures:{day}")
        commands: list[tuple[Any, ...]] = []
        for q in queues:
            k = self.keys(q)
            commands.append(("LLEN", k.queue))
            commands += [("ZCARD", k.zset(name)) for name in keys.SETS]
            commands.append(("HMGET", k.stats, *fields))
        replies = await self.redis.execute_many(commands) if commands else []
        step = 2 + len(keys.SETS)
        result = {}
        for i, q in enumerate(queues):
            row = replies[i * step : (i + 1) * step]
            sets = dict(zip(keys.SETS, row[1:-1], strict=True))
            counters = {f: int(v or 0) for f, v in zip(fields, row[-1], strict=True)}
            result[q] = QueueCounts(row[0], sets, counters)
        return result

    async def flush(self) -> None:
        """Delete every Hopper key except the worker registry (connected workers stay known).

        Other keys in the same Redis database are left alone.
        """
        cursor = 0
        while True:
            cursor_text, found = await self.execute(
                "SCAN", cursor, "MATCH", f"{keys.PREFIX}:*", "COUNT", FLUSH_BATCH
            )
            doomed = [k for k in found if not k.startswith(WORKER_KEYS)]
            if doomed:
                await self.execute("UNLINK", *doomed)
            cursor = int(cursor_text)
            if cursor == 0:
                return

    async def used_memory(self) -> int:
        text = _text(await self.execute("INFO", "memory"))
        for line in text.splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":", 1)[1])
        return 0

    # -- workers ------------------------------------------------------------------------------

    async def worker_join(self, wid: str, now: float, info: bytes) -> str:
        state = await self._run(WORKER_JOIN, (keys.worker(wid), keys.WORKERS), (wid, now, info))
        return _text(state)

    async def worker_leave(self, wid: str, cutoff: float | None = None) -> bool:
        bound = "" if cutoff is None else cutoff
        gone = await self._run(WORKER_LEAVE, (keys.worker(wid), keys.WORKERS), (wid, bound))
        return bool(gone)

    async def beat(self, wid: str, now: float, rss_kb: int, state: str) -> str | None:
        reply = await self._run(BEAT, (keys.worker(wid), keys.WORKERS), (wid, now, rss_kb, state))
        return None if reply is None else _text(reply)

    async def stale_workers(self, cutoff: float, limit: int) -> list[str]:
        wids = await self.execute("ZRANGEBYSCORE", keys.WORKERS, "-inf", cutoff, "LIMIT", 0, limit)
        return [_text(w) for w in wids]

    async def worker_count(self) -> int:
        count: int = await self.execute("ZCARD", keys.WORKERS)
        return count
