"""`hopper check` for workflows (store/audit.py runs it): each blocked job waits for no more
ends than will come to it, from live dependencies that name it among their dependants or from
ends already due for it (wf:due); one that waits for more would stay blocked for good. Walked
in steps (ZSCAN), each step looked at again by one script (blocked_check.lua), so it is safe
while brokers run; `--repair` marks the missing ends due as ends without success, and the
workflows loop settles them under the job's policy (cancelled, or released).

In split mode the ends on their way are also the queues' tallies (lib_workflows.lua), and a
job's dependencies in other slots cannot be read in one script: the dependencies each job still
waits for (`unmet`) are looked up where they are, and a job found waiting for a silent one is
looked at again `settle` seconds later (an end between its steps), then reported. A dependency
the index no longer knows is not judged (its end may be a tally of a queue it does not name),
nor is a job blocked before the store went split (it has no `unmet` list)."""

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hopper_broker.store.audit_part import AuditPart, Note
from hopper_broker.store.base import Script, text
from hopper_broker.store.keys import FINISHED_MARK, JIDS, WF_DUE, QueueKeys
from hopper_broker.store.redis import Store
from hopper_broker.store.workflows import scored

BLOCKED_CHECK = Script("blocked_check")
STRANDED = "blocked for good"
Later = Callable[[Callable[[], Awaitable[None]]], None]  # a look to take again after settling
Pair = tuple[str, str]  # a blocked job, a dependency it waits for


class WorkflowAuditor(AuditPart):
    """Checks (and with `repair`, mends) the blocked jobs of the given queues."""

    def __init__(self, store: Store, note: Note, *, repair: bool, later: Later) -> None:
        super().__init__(store, note, repair=repair)
        self.later = later

    async def run(self, queues: Sequence[str]) -> None:
        for queue in queues:
            k = self.store.jobs.keys(queue)
            async for step in self.redis.steps("ZSCAN", k.blocked):
                jids = [text(jid) for jid in step[::2]]
                if not jids:
                    continue
                if self.redis.split:
                    await self._split_look(queue, jids, again=False)
                    continue
                args = (queue, "1" if self.repair else "0", *jids)
                for jid in await self.redis.run(BLOCKED_CHECK, (k.jobs, JIDS, WF_DUE), args):
                    self.note(STRANDED, queue, text(jid))

    async def _split_look(self, queue: str, jids: list[str], again: bool) -> None:
        """Split mode: the blocked jobs of `queue` among `jids` waiting for an end that none
        of their dependencies will send; a first look only notes them for a second."""
        k = QueueKeys(queue)
        silent = await self._silent(queue, await self._unmet(k, jids))
        still = await self._unmet(k, sorted({jid for jid, _ in silent}))  # settled meanwhile?
        silent = [(jid, dep) for jid, dep in silent if dep in still.get(jid, ())]
        if not silent:
            return
        suspects = sorted({jid for jid, _ in silent})
        if not again:
            self.later(lambda: self._split_look(queue, suspects, again=True))
            return
        for jid in suspects:
            self.note(STRANDED, queue, jid)
        if self.repair:
            entries = [
                json.dumps(["end", queue, jid, dep, "null"], separators=(",", ":"))
                for jid, dep in silent
            ]
            await self.redis.execute("ZADD", WF_DUE, "NX", *scored(entries, 0))

    async def _unmet(self, k: QueueKeys, jids: Sequence[str]) -> dict[str, list[str]]:
        """The dependencies each blocked job of `jids` with a list of them still waits for."""
        if not jids:
            return {}
        lists = await self.redis.execute("HMGET", k.unmet, *jids)
        return {jid: json.loads(found) for jid, found in zip(jids, lists, strict=True) if found}

    async def _silent(self, queue: str, pending: dict[str, list[str]]) -> list[Pair]:
        """The (job, dependency) pairs of `pending` no end is coming for: the dependency, known
        to the index, is not a live job naming the job among its dependants, and no tally or
        wf:due entry carries its end (read in the order an end moves: dependants, tallies,
        wf:due)."""
        pairs = [(jid, dep) for jid, deps in pending.items() for dep in deps]
        if not pairs:
            return []
        deps = sorted({dep for _, dep in pairs})
        owners = dict(zip(deps, await self.redis.execute("HMGET", JIDS, *deps), strict=True))
        by_home: dict[str, list[str]] = defaultdict(list)
        for dep, owner in owners.items():
            if owner is not None:
                by_home[text(owner).removeprefix(FINISHED_MARK)].append(dep)
        coming: set[Pair] = set()
        for home, those in by_home.items():
            coming |= await self._named(home, those, queue)
            coming |= await self._tallied(home, queue)
        coming |= await self._due(queue)
        return [pair for pair in pairs if pair not in coming and owners[pair[1]] is not None]

    async def _named(self, home: str, deps: list[str], queue: str) -> set[Pair]:
        """The pairs the dependencies `deps` of queue `home` will end: those that are live,
        not dead, and name the job among their dependants."""
        k = QueueKeys(home)
        lists, finished, dead, *present = await self.redis.execute_many(
            [
                ("HMGET", k.dependants, *deps),
                ("ZMSCORE", k.finished, *deps),
                ("ZMSCORE", k.dead, *deps),
                *(("HEXISTS", k.jobs, dep) for dep in deps),
            ]
        )
        named: set[Pair] = set()
        for dep, found, done, died, here in zip(deps, lists, finished, dead, present, strict=True):
            names = json.loads(found) if found and here and done is None and died is None else []
            named |= {(names[i + 1], dep) for i in range(0, len(names), 2) if names[i] == queue}
        return named

    async def _tallied(self, home: str, queue: str) -> set[Pair]:
        """The pairs whose end queue `home` keeps as a tally (lib_workflows.lua: wf_mark)."""
        found: set[Pair] = set()
        async for flat in self.redis.steps("HSCAN", QueueKeys(home).tallies):
            for field in (text(f) for f in flat[::2]):
                if field.endswith("/w"):
                    found |= _pair(json.loads(field[:-2]), queue)
        return found

    async def _due(self, queue: str) -> set[Pair]:
        found: set[Pair] = set()
        async for flat in self.redis.steps("ZSCAN", WF_DUE):
            for entry in flat[::2]:
                found |= _pair(json.loads(entry), queue)
        return found


def _pair(entry: list[Any], queue: str) -> set[Pair]:
    """The pair a wf:due entry (JSON [outcome, queue, jid, dep, result]) settles in `queue`."""
    return {(entry[2], entry[3])} if entry[1] == queue else set()
