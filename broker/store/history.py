"""The history: the archive of jobs that reached a final state, written by the finishing scripts
(archive() in scripts/lib_history.lua), read a page at a time and purged by its retention rules.
"""

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence

from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.jobs import JobStore
from hopper_broker.store.keys import DUE_ENDED, FINAL_STATES, HISTORY_COUNT, HISTORY_LEASE

PAGE = Script("history_page")
PURGE = Script("history_purge")
LEASE_END = Script("lease_end")
LEASE_MS = 60_000  # a retention pass by count holds its lease at most this long (split mode)

Scored = tuple[str, float, bytes]  # jid, when it ended (zset score), that score as Redis wrote it


class HistoryStore:
    """Typed reads and purges of the archive."""

    def __init__(self, redis: Redis, jobs: JobStore) -> None:
        self.redis = redis
        self.keys = jobs.keys

    async def page(
        self,
        queue: str,
        states: Sequence[str],
        jobtype: str | None,
        most: int,
        until: str,
        since: str,
        cursor: tuple[bytes, str] | None,
    ) -> list[list[Scored]]:
        """Per state, up to `most` archived jobs of `queue` (of `jobtype`, if given) that ended
        in [since, until] after `cursor` (score as Redis wrote it, jid), newest first."""
        k = self.keys(queue)
        after = cursor or (b"", "")
        found = await self.redis.run(
            PAGE, [k.ended(s, jobtype) for s in states], (most, until, since, *after)
        )
        return [
            [(text(flat[i]), float(flat[i + 1]), flat[i + 1]) for i in range(0, len(flat), 2)]
            for flat in found
        ]

    async def entries(self, queue: str, jids: Sequence[str]) -> list[bytes | None]:
        """The archived entries of `jids` in `queue` (None: none)."""
        if not jids:
            return []
        found: list[bytes | None] = await self.redis.execute(
            "HMGET", self.keys(queue).history, *jids
        )
        return found

    async def find(self, queues: Sequence[str], jid: str) -> list[tuple[str, bytes]]:
        """The archived entries of `jid`, in every queue of `queues` that has one."""
        commands = [("HGET", self.keys(q).history, jid) for q in queues]
        found = await self.redis.execute_many(commands)
        return [(q, entry) for q, entry in zip(queues, found, strict=True) if entry is not None]

    async def queues(self, state: str) -> list[str]:
        """The queues that may have archived jobs of `state`, oldest first (due index)."""
        return [text(q) for q in await self.redis.execute("ZRANGE", DUE_ENDED[state], 0, -1)]

    async def oldest(self, state: str, most: int) -> list[tuple[str, float]]:
        """The `most` queues whose archived jobs of `state` are the oldest, with a time at or
        before each one's oldest."""
        flat = await self.redis.execute("ZRANGE", DUE_ENDED[state], 0, most - 1, "WITHSCORES")
        return [(text(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def first_scores(
        self, queue: str, state: str, most: int, skip: int = 0, bound: float | None = None
    ) -> list[float]:
        """When the `most` oldest archived jobs of `queue` in `state` ended (after the `skip`
        oldest, up to `bound` if given), oldest first."""
        key = self.keys(queue).ended(state)
        if bound is None:
            flat = await self.redis.execute("ZRANGE", key, skip, skip + most - 1, "WITHSCORES")
        else:
            flat = await self.redis.execute(
                "ZRANGE", key, "-inf", bound, "BYSCORE", "LIMIT", skip, most, "WITHSCORES"
            )
        return [float(score) for score in flat[1::2]]

    async def older_than(self, state: str, bound: float, most: int) -> list[str]:
        """Queues that may have archived jobs of `state` that ended at or before `bound`."""
        found = await self.redis.execute(
            "ZRANGEBYSCORE", DUE_ENDED[state], "-inf", bound, "LIMIT", 0, most
        )
        return [text(q) for q in found]

    async def counts(self) -> dict[str, int]:
        """Archived jobs kept per final state, every queue together: the count the scripts
        keep on one Redis; in split mode the sum of the sizes of the queues' indexes (the
        queues in each state's due index), which no write in two steps can make drift."""
        if not self.redis.split:
            found = await self.redis.execute("HGETALL", HISTORY_COUNT)
            return {text(found[i]): int(found[i + 1]) for i in range(0, len(found), 2)}
        return {state: await self.count(state) for state in FINAL_STATES}

    async def count(self, state: str) -> int:
        """Archived jobs kept in `state`, every queue together (see counts())."""
        if not self.redis.split:
            return int(await self.redis.execute("HGET", HISTORY_COUNT, state) or 0)
        queues = await self.queues(state)
        commands = [("ZCARD", self.keys(queue).ended(state)) for queue in queues]
        return sum(await self.redis.execute_many(commands))

    async def clear(self, step: int) -> None:
        """Delete every archived job (FLUSH), `step` at a time; a bounded amount of work (what
        the archive held when it began)."""
        held = await self.counts()
        for state in FINAL_STATES:
            for queue in await self.queues(state):
                for _ in range(held.get(state, 0) // step + 1):
                    if await self.purge(queue, state, "+inf", step) < step:
                        break

    @contextlib.asynccontextmanager
    async def count_pass(self) -> AsyncIterator[bool]:
        """Whether this broker may run a state's retention by count now (for the block): always
        on one Redis (each purge reads the count in its script); in split mode while no other
        broker runs it (a lease on the global keys, LEASE_MS at most), since each reads the
        count before its purges and two at once would each delete what is over it."""
        if not self.redis.split:
            yield True
            return
        token = secrets.token_hex(8)
        taken = await self.redis.execute("SET", HISTORY_LEASE, token, "NX", "PX", LEASE_MS)
        try:
            yield taken is not None
        finally:
            if taken is not None:
                await self.redis.run(LEASE_END, (HISTORY_LEASE,), (token,))

    async def purge(
        self,
        queue: str,
        state: str,
        bound: float | str,
        most: int,
        keep: tuple[int, int] | None = None,
    ) -> int:
        """Delete up to `most` of the oldest archived jobs of `queue` in `state` that ended at
        or before `bound`; with `keep` (most kept, count as the caller read it), only as many
        as the count of `state` is over it (on one Redis the script reads the count itself)."""
        k = self.keys(queue)
        keys = (k.history, k.ended(state), HISTORY_COUNT, DUE_ENDED[state])
        kept, count = ("", "") if keep is None else keep
        visit = await self.redis.read_due([DUE_ENDED[state]], queue)
        args = (queue, state, bound, most, kept, count)
        return int(await self.redis.run(PURGE, keys, args, visit))
