"""The worker registry in Redis: which worker processes are connected, and their states."""

from hopper_broker.store import keys
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.keys import HOLDING, WORKERS

BEAT = Script("beat")
LOST = Script("lost")
WORKER_JOIN = Script("worker_join")
WORKER_LEAVE = Script("worker_leave")
WORKER_STATE = Script("worker_state")


class WorkerStore:
    """Typed worker-registry operations (records shared by every broker process)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def join(self, wid: str, now: float, info: bytes) -> str:
        """One more connection of `wid`; returns the worker's state."""
        state = await self.redis.run(
            WORKER_JOIN, (keys.worker(wid), WORKERS, HOLDING), (wid, now, info)
        )
        return text(state)

    async def leave(self, wid: str, cutoff: float | None = None) -> bool:
        """A connection closed (or, with `cutoff`, the worker stopped beating before it);
        True when the record was deleted."""
        bound = "" if cutoff is None else cutoff
        where = (keys.worker(wid), WORKERS, HOLDING, keys.held(wid))
        return bool(await self.redis.run(WORKER_LEAVE, where, (wid, bound)))

    async def beat(self, wid: str, now: float, rss_kb: int, state: str) -> str | None:
        """Record a heartbeat; the state after it, or None for an unknown worker."""
        reply = await self.redis.run(BEAT, (keys.worker(wid), WORKERS), (wid, now, rss_kb, state))
        return None if reply is None else text(reply)

    async def signal(self, wid: str, state: str) -> str | None:
        """Move a worker's state forward (quiet, terminate) without a heartbeat; the state
        after it, or None for an unknown worker."""
        reply = await self.redis.run(WORKER_STATE, (keys.worker(wid),), (state,))
        return None if reply is None else text(reply)

    async def state(self, wid: str) -> str | None:
        found = await self.redis.execute("HGET", keys.worker(wid), "state")
        return None if found is None else text(found)

    async def stale(self, cutoff: float, limit: int) -> list[str]:
        wids = await self.redis.execute("ZRANGEBYSCORE", WORKERS, "-inf", cutoff, "LIMIT", 0, limit)
        return [text(w) for w in wids]

    async def count(self) -> int:
        found: int = await self.redis.execute("ZCARD", WORKERS)
        return found

    # -- workers that went holding jobs, for the lost-worker pass -------------------------------

    async def lost(self, cutoff: float, limit: int) -> list[str]:
        """Workers that went while they may have held jobs, last heard from before `cutoff`."""
        wids = await self.redis.execute("ZRANGEBYSCORE", HOLDING, "-inf", cutoff, "LIMIT", 0, limit)
        return [text(w) for w in wids]

    async def held(self, wid: str, cursor: int, count: int) -> tuple[int, list[tuple[str, str]]]:
        """One SSCAN step over the jobs a worker fetched: (next cursor, [(queue, jid)])."""
        next_cursor, members = await self.redis.execute(
            "SSCAN", keys.held(wid), cursor, "COUNT", count
        )
        pairs = [text(m).partition(":") for m in members]
        return int(next_cursor), [(queue, jid) for queue, _, jid in pairs]

    async def forget_lost(self, wid: str, stale: list[tuple[str, str]]) -> bool:
        """Drop `stale` (queue, jid) entries of a lost worker's held set, then forget it as
        lost if it came back or holds nothing more."""
        entries = [f"{queue}:{jid}" for queue, jid in stale]
        where = (HOLDING, keys.held(wid), WORKERS)
        return bool(await self.redis.run(LOST, where, (wid, *entries)))
