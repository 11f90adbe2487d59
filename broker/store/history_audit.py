"""`hopper check` for the history (store/audit.py runs it): every archived entry is in both its
indexes, every index entry has its entry, the counts per state are what the indexes hold, and
each queue with entries of a state is in that state's due index no later than its oldest.
Walked in steps (HSCAN, ZSCAN), each step looked at again by one script (history_check.lua),
so it is safe while brokers run; `--repair` mends each problem in that step."""

from hopper_broker.store import keys
from hopper_broker.store.audit_part import AuditPart
from hopper_broker.store.base import Script, text
from hopper_broker.store.keys import FINAL_STATES, HISTORY_COUNT, JIDS

HISTORY_CHECK = Script("history_check")


class HistoryAuditor(AuditPart):
    """Checks (and with `repair`, mends) the archive of every queue."""

    async def run(self) -> None:
        found = await self._indexes()
        for queue, indexes in found.items():
            k = self.store.jobs.keys(queue)
            async for step in self.redis.steps("HSCAN", k.history):
                await self._check(queue, k.history, "entries", "", "", step[::2])
            for key, (state, jobtype) in indexes.items():
                async for step in self.redis.steps("ZSCAN", key):
                    await self._check(queue, key, "index", state, jobtype, step[::2])
                if jobtype == "":
                    await self._oldest_is_due(queue, key, state)
        if not self.redis.split:  # split mode keeps no count (store/history.py: counts())
            await self._counts(sorted(found))

    async def _indexes(self) -> dict[str, dict[str, tuple[str, str]]]:
        """Per queue, its index keys (`ended:<state>[:<jobtype>]`) with their state, jobtype."""
        found: dict[str, dict[str, tuple[str, str]]] = {}
        async for raw in self.redis.keys(f"{keys.QUEUE_PREFIX}*"):
            key = text(raw)
            queue = keys.queue_of_key(key)
            prefix = f"{keys.QUEUE_PREFIX}{{{queue}}}:ended:"
            if queue is None or not key.startswith(prefix):
                continue
            state, _, jobtype = key[len(prefix) :].partition(":")
            if state in FINAL_STATES:
                found.setdefault(queue, {})[key] = (state, jobtype)
        for state in FINAL_STATES:  # a queue whose entries lost their indexes
            for queue in await self.store.history.queues(state):
                found.setdefault(queue, {})
        return found

    async def _check(
        self, queue: str, key: str, mode: str, state: str, jobtype: str, jids: list[bytes]
    ) -> None:
        if not jids:
            return
        k = self.store.jobs.keys(queue)
        args = ("1" if self.repair else "0", mode, state, jobtype, *jids)
        found = await self.redis.run(HISTORY_CHECK, (k.jobs, JIDS, key), args)
        for i in range(0, len(found), 2):
            self.note(text(found[i]), queue, text(found[i + 1]))

    async def _oldest_is_due(self, queue: str, key: str, state: str) -> None:
        """The queue's due entry for `state` must be no later than the oldest entry of `key`
        (both read in one step, history_check.lua: retention moves them together)."""
        k = self.store.jobs.keys(queue)
        read = await self.redis.read_first([("ZSCORE", keys.DUE_ENDED[state], queue)])
        args = ("1" if self.repair else "0", "due", state, queue, read)
        found = await self.redis.run(HISTORY_CHECK, (k.jobs, JIDS, key), args)
        for i in range(0, len(found), 2):
            self.note(text(found[i]), queue, text(found[i + 1]))

    async def _counts(self, queues: list[str]) -> None:
        """Each state's count against what its indexes hold, in one step (history_check.lua)."""
        k = self.store.jobs.keys("default")  # any queue's: names the global keys
        args = ("1" if self.repair else "0", "counts", keys.QUEUE_PREFIX, *queues)
        found = await self.redis.run(HISTORY_CHECK, (k.jobs, JIDS, HISTORY_COUNT), args)
        for i in range(0, len(found), 2):
            self.note(text(found[i]), "", text(found[i + 1]))
