"""`hopper check`: walk the whole store in bounded batches and report every broken invariant,
repairing, when asked, what can be repaired without losing a job.

The invariants of schema 2 (see keys.py): every record of a queue is in exactly one place (the
queue list, working, scheduled, retries or dead) and every place entry has a record; the jid
index names, for every live job, the one queue that holds it, and nothing else; a queue with
entries in a sorted set is in that set's due index no later than its earliest entry; a queue
with waiting jobs is listed; every worker record has its heartbeat entry and the other way round.

The walk reads in batches while brokers keep working, so what it sees may be mid-change; every
suspect is therefore looked at again by one atomic script (inspect.lua and friends), which
reports only what it sees itself and, with repair, fixes it in the same step. In split mode a
move's global writes follow its script (docs/cluster.md), so what inspect.lua and
queue_check.lua find may be a second step on its way: their first look changes and reports
nothing, and what it found is looked at again `settle` seconds later.
"""

import functools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec
import trio

from hopper_broker.store import keys
from hopper_broker.store.audit_part import Problem, Report
from hopper_broker.store.base import Script, text
from hopper_broker.store.batch_audit import BatchAuditor
from hopper_broker.store.history_audit import HistoryAuditor
from hopper_broker.store.keys import (
    DUE,
    FINISHED_MARK,
    JIDS,
    PUSHED_CHANNEL,
    QUEUES,
    SCHEMA,
    WORKERS,
)
from hopper_broker.store.redis import Store
from hopper_broker.store.workflow_audit import WorkflowAuditor
from hopper_client.schema.jobs import job_decoder

INSPECT = Script("inspect")
REPOINT = Script("repoint")
QUEUE_CHECK = Script("queue_check")
WORKER_CHECK = Script("worker_check")
ATTACHED_CHECK = Script("attached_check")
EXPIRY_CHECK = Script("expiry_check")

BATCH = 500  # entries read per Redis call
SETTLE = 1.0  # seconds before a split-mode suspect is looked at again
ORDER = ("working", "scheduled", "retries", "dead")  # the sets in the scripts' KEYS order
PLACES = (*ORDER, "finished", "blocked")  # every sorted set a record can be in
DUES = tuple(DUE[name] for name in (*ORDER, "finished"))  # their due indexes, in that order


class Auditor:
    """Checks (and with `repair`, mends) one store."""

    def __init__(self, store: Store, *, repair: bool = False, settle: float = SETTLE) -> None:
        self.store = store
        self.redis = store.redis
        self.repair = repair
        self.settle = settle
        self.report = Report()
        self._again: list[Callable[[], Awaitable[None]]] = []  # split mode: second looks
        self._seen: set[str] = set()  # jids the queue walk looked at: the index walk skips them
        self._lane_keys: dict[str, list[str]] = {}  # queue -> ids of the lane keys SCAN found

    async def run(self) -> Report:
        schema = await self.store.schema()
        if schema != SCHEMA:
            found = "no schema mark" if schema is None else f"schema {schema}"
            if schema is not None and schema > SCHEMA:
                detail = f"{found}, written by a newer Hopper: check it with that version"
            else:
                detail = f"{found}; a broker of this version migrates the store when it starts"
            self.report.problems.append(Problem("schema", detail=detail))
            return self.report
        queues = await self._queue_names()
        for queue in queues:
            await self._check_queue(queue)
        await self._check_index()
        await self._check_workers()
        await BatchAuditor(self.store, self._problem, repair=self.repair).run(queues)
        await WorkflowAuditor(
            self.store, self._problem, repair=self.repair, later=self._again.append
        ).run(queues)
        await HistoryAuditor(self.store, self._problem, repair=self.repair).run()
        if self._again:
            await trio.sleep(self.settle)
            for look in self._again:
                await look()
        return self.report

    def _problem(
        self, kind: str, queue: str, jid: str, detail: str = "", repaired: bool | None = None
    ) -> None:
        fixed = self.repair if repaired is None else repaired
        self.report.problems.append(Problem(kind, queue, jid, detail, repaired=fixed))

    # -- queues -------------------------------------------------------------------------------

    async def _queue_names(self) -> list[str]:
        """Every queue that holds a key, is listed, or is in a due index."""
        names = set(await self.store.queues.holding())
        async for key in self.redis.keys(f"{keys.QUEUE_PREFIX}*"):
            name = keys.queue_of_key(text(key))
            if name is not None:
                names.add(name)
                lane = keys.lane_of_key(name, text(key))
                if lane is not None:
                    self._lane_keys.setdefault(name, []).append(lane)
        return sorted(names)

    async def _check_queue(self, queue: str) -> None:
        self.report.queues += 1
        await self._queue_check(queue)
        k = self.store.jobs.keys(queue)
        listed: Counter[str] = Counter()
        for start in range(0, await self.redis.execute("LLEN", k.queue), BATCH):
            page = await self.redis.execute("LRANGE", k.queue, start, start + BATCH - 1)
            listed.update(text(j) for j in page)
        async for flat in self.redis.steps("ZSCAN", k.prioritized):  # waiting too
            listed.update(text(j) for j in flat[::2])
        for lane in await self._lanes(queue):
            async for flat in self.redis.steps("ZSCAN", k.lane(lane)):
                listed.update(text(j) for j in flat[::2])
        suspects = {jid for jid, n in listed.items() if n > 1}
        suspects |= await self._orphans(queue, list(listed))
        async for jid, found in self._records(queue, listed):
            if found:
                suspects.add(jid)
        for name in PLACES:
            async for flat in self.redis.steps("ZSCAN", k.zset(name)):
                suspects |= await self._orphans(queue, [text(j) for j in flat[::2]])
        for jid in sorted(suspects):
            await self._inspect(queue, jid)
        await self._check_notes(queue)
        await self._check_expiries(queue)

    async def _queue_check(self, queue: str, again: bool = False) -> None:
        """queue_check.lua on one queue (split mode: a first look changes nothing, see above)."""
        k = self.store.jobs.keys(queue)
        reads = [("SISMEMBER", QUEUES, queue), *(("ZSCORE", due, queue) for due in DUES)]
        problems = await self.redis.run(
            QUEUE_CHECK,
            (
                k.queue,
                QUEUES,
                *(k.zset(n) for n in (*ORDER, "finished")),
                *DUES,
                k.prioritized,
                k.meta,
            ),
            (
                queue,
                self._look(again),
                await self.redis.read_first(reads),
                *self._lane_keys.get(queue, ()),
            ),
        )
        if not self._first_look(again, problems, functools.partial(self._queue_check, queue, True)):
            self._note(queue, "", problems)

    async def _lanes(self, queue: str) -> list[str]:
        """The lanes of a queue that hold waiting jobs (those served and those resting)."""
        k = self.store.jobs.keys(queue)
        found = await self.redis.execute_many(
            [("ZRANGE", k.lanes, 0, -1), ("ZRANGE", k.resting, 0, -1)]
        )
        return sorted({text(lane) for reply in found for lane in reply})

    async def _records(self, queue: str, listed: Counter[str]) -> AsyncIterator[tuple[str, bool]]:
        """Each record of the queue, with whether it looks wrong (place count, index, JSON)."""
        k = self.store.jobs.keys(queue)
        async for flat in self.redis.steps("HSCAN", k.jobs):
            jids = [text(j) for j in flat[::2]]
            if jids:
                commands: list[tuple[Any, ...]] = [
                    ("ZMSCORE", k.zset(name), *jids) for name in PLACES
                ]
                commands.append(("HMGET", JIDS, *jids))
                *scores, owners = await self.redis.execute_many(commands)
                for i, (jid, payload) in enumerate(zip(jids, flat[1::2], strict=True)):
                    self.report.jobs += 1
                    places = (jid in listed) + sum(s[i] is not None for s in scores)
                    finished = scores[PLACES.index("finished")][i] is not None
                    owner = None if owners[i] is None else text(owners[i])
                    if not _readable(payload):
                        self.report.problems.append(Problem("unreadable record", queue, jid))
                    yield jid, places != 1 or _index_wrong(queue, owner, finished)

    async def _orphans(self, queue: str, jids: Sequence[str]) -> set[str]:
        """Those of `jids` that have no record in the queue."""
        found: set[str] = set()
        jobs_key = self.store.jobs.keys(queue).jobs
        for start in range(0, len(jids), BATCH):
            chunk = jids[start : start + BATCH]
            exists = await self.redis.execute_many([("HEXISTS", jobs_key, j) for j in chunk])
            found.update(j for j, e in zip(chunk, exists, strict=True) if not e)
        return found

    async def _inspect(self, queue: str, jid: str, again: bool = False) -> None:
        """inspect.lua on one jid (split mode: a first look changes nothing, see above)."""
        self._seen.add(jid)
        k = self.store.jobs.keys(queue)
        reads = [("HGET", JIDS, jid), *(("ZSCORE", due, queue) for due in DUES)]
        problems = await self.redis.run(
            INSPECT,
            (
                k.jobs,
                k.queue,
                k.working,
                k.scheduled,
                k.retries,
                k.dead,
                JIDS,
                QUEUES,
                *(DUE[n] for n in ORDER),
                k.finished,
                DUE["finished"],
                k.prioritized,
                k.meta,
                k.blocked,
                k.holders,
            ),
            (queue, jid, self._look(again), PUSHED_CHANNEL, await self.redis.read_first(reads)),
        )
        if self._first_look(again, problems, functools.partial(self._inspect, queue, jid, True)):
            return
        for kind, detail in problems:
            if text(kind) == "index elsewhere":
                await self._index_elsewhere(queue, jid, text(detail))
            else:
                self._note(queue, jid, [(kind, detail)])

    async def _index_elsewhere(self, queue: str, jid: str, owner: str) -> None:
        """The index names `owner` for a job `queue` holds: two live jobs share the jid, or the
        entry is stale."""
        if await self.store.jobs.payload(owner, jid) is not None:
            problem = Problem("jid in two queues", queue, jid, owner)
            if self.repair:
                problem.repaired = await self.store.jobs.rename(queue, jid) is not None
        else:
            problem = Problem("index elsewhere", queue, jid, owner)
            if self.repair:
                problem.repaired = await self._repoint(jid, owner, queue)
        self.report.problems.append(problem)

    async def _repoint(self, jid: str, owner: str, queue: str) -> bool:
        """Make the jid index name `queue`, which holds the job, instead of `owner`, which does
        not: atomically on one Redis; in split mode the two queues read first, the index
        entry swapped while it still names `owner`."""
        owner_jobs, holder = self.store.jobs.keys(owner).jobs, self.store.jobs.keys(queue).jobs
        if not self.redis.split:
            return bool(
                await self.redis.run(REPOINT, (JIDS, owner_jobs, holder), (jid, owner, queue))
            )
        found = await self.redis.execute_many(
            [("HEXISTS", owner_jobs, jid), ("HEXISTS", holder, jid)]
        )
        if found != [0, 1]:
            return False
        return bool(await self.redis.global_step("index_swap", JIDS, jid, owner, queue))

    # -- the jid index ------------------------------------------------------------------------

    async def _check_notes(self, queue: str) -> None:
        """Each note of a finished job belongs to a job the finished set holds, each holder to
        a reservation."""
        k = self.store.jobs.keys(queue)
        for hash_, zset, kind in (
            (k.final, k.finished, "note without job"),
            (k.holders, k.working, "holder without reservation"),
            (k.waits, k.blocked, "dependencies without blocked job"),
            (k.unmet, k.blocked, "dependencies without blocked job"),
        ):
            async for flat in self.redis.steps("HSCAN", hash_):
                jids = [text(j) for j in flat[::2]]
                if not jids:
                    continue
                scores = await self.redis.execute("ZMSCORE", zset, *jids)
                for jid in (j for j, s in zip(jids, scores, strict=True) if s is None):
                    problems = await self.redis.run(
                        ATTACHED_CHECK, (hash_, zset), (jid, self._flag, kind)
                    )
                    self._note(queue, jid, problems)

    async def _check_expiries(self, queue: str) -> None:
        """Each expiry belongs to a job that waits to run, and FETCH knows the queue has some."""
        k = self.store.jobs.keys(queue)
        where = (k.expiring, k.jobs, k.working, k.dead, k.finished, k.meta)
        self._note(queue, "", await self.redis.run(EXPIRY_CHECK, where, ("", self._flag)))
        async for flat in self.redis.steps("ZSCAN", k.expiring):
            jids = [text(j) for j in flat[::2]]
            if not jids:
                continue
            commands: list[tuple[Any, ...]] = [("HMGET", k.jobs, *jids)]
            commands += [("ZMSCORE", zset, *jids) for zset in (k.working, k.dead, k.finished)]
            records, *places = await self.redis.execute_many(commands)
            for i, jid in enumerate(jids):
                if records[i] is None or any(p[i] is not None for p in places):
                    problems = await self.redis.run(EXPIRY_CHECK, where, (jid, self._flag))
                    self._note(queue, jid, problems)

    async def _check_index(self) -> None:
        """Index entries that name a queue without that record (a stale entry) are inspected
        there; entries for records are covered by the queue walk."""
        async for flat in self.redis.steps("HSCAN", JIDS):
            pairs = [(text(j), text(q)) for j, q in zip(flat[::2], flat[1::2], strict=True)]
            exists = await self.redis.execute_many([_holds(self.store, j, q) for j, q in pairs])
            pairs = [(j, q.removeprefix(FINISHED_MARK)) for j, q in pairs]
            for (jid, queue), found in zip(pairs, exists, strict=True):
                if not found and jid not in self._seen:
                    await self._inspect(queue, jid)

    # -- workers ------------------------------------------------------------------------------

    async def _check_workers(self) -> None:
        wids = {text(w) for w in await self.redis.execute("ZRANGE", WORKERS, 0, -1)}
        prefix = keys.worker("")
        async for key in self.redis.keys(f"{prefix}*"):
            wids.add(text(key)[len(prefix) :])
        self.report.workers = len(wids)
        for wid in sorted(wids):
            problems = await self.redis.run(
                WORKER_CHECK, (keys.worker(wid), WORKERS), (wid, self._flag)
            )
            self._note("", wid, problems)

    # -- helpers ------------------------------------------------------------------------------

    @property
    def _flag(self) -> str:
        return "1" if self.repair else "0"

    def _look(self, again: bool) -> str:
        """The repair flag of a look that may be a first one (see _first_look)."""
        return self._flag if again or not self.redis.split else "0"

    def _first_look(
        self, again: bool, problems: Sequence[Any], look: Callable[[], Awaitable[None]]
    ) -> bool:
        """Whether this was a split-mode first look (nothing changed): `look` comes again after
        `settle` seconds if it found something."""
        if again or not self.redis.split:
            return False
        if problems:
            self._again.append(look)
        return True

    def _note(self, queue: str, jid: str, problems: Sequence[Sequence[bytes]]) -> None:
        for kind, detail in problems:
            self.report.problems.append(
                Problem(text(kind), queue, jid, text(detail), repaired=self.repair)
            )


def _holds(store: Store, jid: str, owner: str) -> tuple[str, str, str]:
    """The command that says whether the queue the jid index names (`~queue` for a finished
    job) holds the job."""
    return ("HEXISTS", store.jobs.keys(owner.removeprefix(FINISHED_MARK)).jobs, jid)


def _index_wrong(queue: str, owner: str | None, finished: bool) -> bool:
    """Whether a record's jid index entry needs a look: a live one must name its queue, a
    finished one must not say it is live."""
    if finished:
        return owner == queue
    return owner != queue


def _readable(payload: bytes) -> bool:
    try:
        job_decoder.decode(payload)
    except msgspec.DecodeError:
        return False
    return True
