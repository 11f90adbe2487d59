"""The worker registry: which worker processes are connected, beating, quiet or terminating.

Records live in Redis (shared by every broker process); this process keeps the last state it
saw of each worker, so that FETCH can refuse work to quiet workers without a round trip.
"""

from broker.config import Config
from broker.errors import CommandError
from broker.store.redis import Store

STATES = ("running", "quiet", "terminate")  # the only order a worker's state moves in


class Workers:
    """Registers worker connections, records heartbeats and forgets silent workers."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self._states: dict[str, str] = {}  # wid -> state, as last seen by this process

    def may_fetch(self, wid: str) -> bool:
        """False once the worker is quiet or terminating."""
        return self._states.get(wid, "running") == "running"

    async def join(self, wid: str, now: float, info: bytes) -> None:
        """One more connection of worker `wid` (its first HELLO's info is kept)."""
        self._states[wid] = await self.store.worker_join(wid, now, info)

    async def leave(self, wid: str) -> None:
        """A connection of `wid` closed; the record goes with the last one."""
        if await self.store.worker_leave(wid):
            self._states.pop(wid, None)

    async def beat(self, wid: str, state: str, rss_kb: int, now: float) -> str:
        """Record a heartbeat; returns the worker's state. States only move forward."""
        current = await self.store.beat(wid, now, rss_kb, state if state in STATES else "")
        if current is None:
            raise CommandError(f"unknown worker {wid}")
        self._states[wid] = current
        return current

    async def reap(self, now: float) -> list[str]:
        """Forget workers whose last beat is older than worker_ttl; returns their wids."""
        cutoff = now - self.config.worker_ttl
        gone = []
        for wid in await self.store.stale_workers(cutoff, self.config.reaper_batch):
            if await self.store.worker_leave(wid, cutoff):
                self._states.pop(wid, None)
                gone.append(wid)
        return gone
