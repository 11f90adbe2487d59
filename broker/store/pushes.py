"""Pushes: jobs stored in their queues, each call one Lua script (scripts/push.lua, and
push_graph.lua for a workflow across queues; split mode claims the jids first, claim.lua).

Like jobs.py, this module holds no lifecycle rules: intake.py decides what is pushed.
"""

from collections.abc import Sequence
from typing import Any

from hopper_broker.policy import Unique
from hopper_broker.store import keys
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.jobs import JobStore
from hopper_broker.store.keys import (
    AWAITED,
    CRON,
    DUE,
    DUE_TALLIES,
    FINISHED_CHANNEL,
    JIDS,
    PUSHED_CHANNEL,
    QUEUES,
)
from hopper_broker.store.workflows import WorkflowStore, dependencies

PUSH = Script("push")
CLAIM = Script("claim")
PUSH_GRAPH = Script("push_graph")

# jid, payload, at score or '', unique lock, when it expires (None: never), batch: (bid, kind)
# with kind '' for a job of the batch, 'complete' or 'success' for its callback (None: none),
# its dependencies: '' or JSON [policy, jid, ...] (workflows, see scripts/lib_workflows.lua)
PushEntry = tuple[str, bytes, str, Unique | None, float | None, tuple[str, str] | None, str]
PUSH_KEYS = 18  # the push script's fixed KEYS; unique locks follow
SPLIT_GRAPH = 10  # push_graph()'s result for every job in split mode
TALLY_SWEEP = 10.0  # seconds from a push of a batch's job until the batches loop looks at the
# queue's tallies (split mode; lib_batches.lua), and between its looks while the queue has some


class PushStore:
    """Typed pushes for the intake."""

    def __init__(self, redis: Redis, jobs: JobStore, workflows: WorkflowStore) -> None:
        self.redis = redis
        self.keys = jobs.keys
        self.workflows = workflows

    async def push(
        self,
        queue: str,
        entries: Sequence[PushEntry],
        now: float,
        keep: str,
        claim: tuple[str, float] | None = None,
        limits: str = "",
        graph: bool = False,
    ) -> list[tuple[int, str]]:
        """Store jobs of one queue (see PushEntry). Each result: 1 stored, 0 jid already live,
        2 not unique, 4 the queue is full, 6 no such batch, 3 a batch callback that may not be
        pushed (already pushed, or no longer due); all 3 when
        `claim` (a cron entry id and tick) was already made for that tick or a later one, all
        5 when `limits` is 'D' (draining); otherwise `limits` is the queue's max_size ('' for
        none). Each comes with the jid it names ('' but for 7 unknown dependency, 8 dependency
        failed). A `graph` is stored all or nothing (9: refused with another job)."""
        claimed = "" if claim is None else f"{claim[0]} {claim[1]!r}"
        keys_, args = self._push_call(queue, entries, now, keep, claimed, limits, graph)
        if not self.redis.split:
            return _push_results(await self.redis.run(PUSH, keys_, args))
        with self.redis.whole():  # a claim is not left without its push
            args[8] = await self._claim(queue, entries, graph, now)
            stored = await self.redis.run(PUSH, keys_, args)
        return _push_results(stored)

    async def _claim(
        self, queue: str, entries: Sequence[PushEntry], graph: bool, now: float
    ) -> str:
        """Split mode's first step of a push (scripts/claim.lua): the jids claimed, the queue
        listed and its due entry for its earliest scheduled job added; the claims as push.lua
        takes them, with each job's batch judged and its dependencies in other queues told
        (WorkflowStore.register)."""
        earliest = min((float(entry[2]) for entry in entries if entry[2]), default=None)
        due = "" if earliest is None else repr(earliest)
        batches = [" ".join(e[5]).rstrip() if e[5] is not None else "" for e in entries]
        deps = dict.fromkeys(dep for entry in entries for dep in dependencies(entry[6]))
        sweep = repr(now + TALLY_SWEEP) if any(batches) or deps else ""
        claims: bytes = await self.redis.run(
            CLAIM,
            (JIDS, QUEUES, DUE["scheduled"], DUE_TALLIES),
            (queue, due, sweep, len(entries), *(e[0] for e in entries), *batches, *deps),
        )
        if not deps:
            return text(claims)
        dependants = [(entry[0], entry[6]) for entry in entries if entry[6]]
        return await self.workflows.register(queue, dependants, text(claims), sweep)

    async def push_graph(
        self, segments: Sequence[tuple[str, Sequence[PushEntry], str]], now: float, keep: str
    ) -> list[tuple[int, str]]:
        """Store a workflow whose jobs are in several queues, all or nothing: `segments` are
        (queue, its jobs, its limits as for push()); the results, in the segments' order, are
        push()'s (9: refused with another job); in split mode, where one script cannot span
        their slots, every job is refused (SPLIT_GRAPH)."""
        if self.redis.split:
            return [(SPLIT_GRAPH, "")] * sum(len(entries) for _, entries, _ in segments)
        keys_: list[str] = []
        sizes: list[int] = []
        args: list[Any] = []
        for queue, entries, limits in segments:
            more_keys, more_args = self._push_call(queue, entries, now, keep, "", limits, False)
            keys_ += more_keys
            args += more_args
            sizes += (len(more_keys), len(more_args))
        return _push_results(
            await self.redis.run(PUSH_GRAPH, keys_, (len(segments), *sizes, *args))
        )

    def _push_call(
        self,
        queue: str,
        entries: Sequence[PushEntry],
        now: float,
        keep: str,
        claimed: str,
        limits: str,
        graph: bool,
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of push_queue() (scripts/lib_push.lua) for jobs of one queue."""
        k = self.keys(queue)
        locks: list[str] = []
        args: list[Any] = [PUSHED_CHANNEL, queue, claimed, keep, FINISHED_CHANNEL, now, limits]
        args += ("G" if graph else "", "")  # the claims ('' on one Redis): see push()
        for jid, payload, at, unique, expires, batch, after in entries:
            spec = joins = ""
            if unique is not None:
                locks.append(k.unique(unique.digest))
                spec = f"{PUSH_KEYS + len(locks)} {unique.ttl_ms} {unique.mode}"
            if batch is not None:
                locks.append(keys.batch(batch[0]))
                joins = f"{PUSH_KEYS + len(locks)} {batch[1]}".rstrip()
            expiry = "" if expires is None else repr(expires)
            args += (jid, payload, at, spec, expiry, joins, after)
        keys_ = [
            k.jobs,
            k.queue,
            k.scheduled,
            JIDS,
            DUE["scheduled"],
            QUEUES,
            k.finished,
            k.final,
            k.progress,
            k.working,
            k.retries,
            k.dead,
            DUE["finished"],
            AWAITED,
            k.cron if self.redis.split else CRON,  # the tick claims (split: the queue's own)
            k.meta,
            k.prioritized,
            k.expiring,
            *locks,
        ]
        return keys_, args


def _push_results(results: list[Any]) -> list[tuple[int, str]]:
    """push_queue()'s results: a code, or {code, the jid it names}."""
    return [(int(r[0]), text(r[1])) if isinstance(r, list) else (int(r), "") for r in results]
