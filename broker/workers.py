"""The worker registry: which worker processes are connected, beating, quiet or terminating.

Records live in Redis (shared by every broker process). To refuse work to a quiet worker
without a round trip per FETCH, this process remembers each worker's state for STATE_TTL
seconds after reading it, then reads it again: a state set through another broker reaches
this one within that time, and nothing is remembered for ever.
"""

import trio

from hopper_broker.config import Settings
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import CommandError

STATES = ("running", "quiet", "terminate")  # the only order a worker's state moves in
STATE_TTL = 1.0  # seconds a worker's state read from Redis is trusted by this process


class Workers:
    """Registers worker connections, records heartbeats and forgets silent workers."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._states: dict[str, tuple[str, float]] = {}  # wid -> (state, when it was read)

    async def may_fetch(self, wid: str) -> bool:
        """False once the worker is quiet or terminating."""
        if not wid:
            return True
        seen = self._states.get(wid)
        if seen is None or trio.current_time() - seen[1] > STATE_TTL:
            state = await self.store.workers.state(wid) or "running"
            self._note(wid, state)
            return state == "running"
        return seen[0] == "running"

    async def join(self, wid: str, now: float, info: bytes) -> None:
        """One more connection of worker `wid` (its first HELLO's info is kept)."""
        self._note(wid, await self.store.workers.join(wid, now, info))

    async def leave(self, wid: str) -> None:
        """A connection of `wid` closed; the record goes with the last one."""
        if await self.store.workers.leave(wid):
            self._states.pop(wid, None)

    async def beat(self, wid: str, state: str, rss_kb: int, now: float) -> str:
        """Record a heartbeat; returns the worker's state. States only move forward."""
        current = await self.store.workers.beat(wid, now, rss_kb, state if state in STATES else "")
        if current is None:
            raise CommandError(f"unknown worker {wid}")
        self._note(wid, current)
        return current

    async def signal(self, wid: str, state: str) -> str:
        """WORKER QUIET|TERMINATE, the dashboard: the worker's next BEAT is told; returns its
        state."""
        if state not in STATES[1:]:
            raise CommandError(f"a worker can be told quiet or terminate, not {state}")
        current = await self.store.workers.signal(wid, state)
        if current is None:
            raise CommandError(f"unknown worker {wid}")
        self._note(wid, current)
        return current

    async def reap(self, now: float) -> list[str]:
        """Forget workers whose last beat is older than worker_ttl; returns their wids."""
        config = self.settings()
        cutoff = now - config.worker_ttl
        gone = []
        for wid in await self.store.workers.stale(cutoff, config.reaper_batch):
            if await self.store.workers.leave(wid, cutoff):
                gone.append(wid)
        oldest = trio.current_time() - STATE_TTL
        for wid in [w for w, (_, read) in self._states.items() if read < oldest]:
            del self._states[wid]
        return gone

    def _note(self, wid: str, state: str) -> None:
        self._states[wid] = (state, trio.current_time())
