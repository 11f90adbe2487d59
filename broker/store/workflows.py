"""Workflows in Redis (scripts/lib_workflows.lua): the ends of dependencies settled in their
dependants' queues (workflow.lua; split mode: settle.lua, each entry settled once in its queue's
slot, then taken from wf:due), and split mode's registration of a push's dependants with their
dependencies in other queues (wf_register.lua), between the claim step and the push script
(docs/cluster.md, Workflows)."""

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.keys import (
    AWAITED,
    DUE_TALLIES,
    FINISHED_CHANNEL,
    FINISHED_MARK,
    JIDS,
    WF_DUE,
    QueueKeys,
)

WORKFLOW = Script("workflow")
SETTLE = Script("settle")
REGISTER = Script("wf_register")
LATER = 1.0  # split mode: seconds until an end whose dependant's push is on its way is retried


def dependencies(after: str) -> list[str]:
    """The jids a pushed job depends on, from its spec ('' or JSON [policy, jid, ...])."""
    found: list[str] = json.loads(after)[1:] if after else []
    return found


class WorkflowStore:
    """Typed workflow operations for the workflows room (broker/workflows.py) and the push."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def register(
        self, queue: str, dependants: Sequence[tuple[str, str]], claims: str, sweep: str
    ) -> str:
        """Split mode: the dependants (jid, spec) about to be pushed into `queue` named by
        their live dependencies of other queues, each such queue in one call; returns the
        claims (claim.lua's JSON, which holds the dependencies' index entries) with the
        verdict on each of those dependencies added, as the push script takes them. The
        queues that now name a dependant are announced in due:tallies again, at `sweep`: a
        batches loop's look that began before the registration does not drop them."""
        found = json.loads(claims)
        owners: dict[str, str | bool] = found[2]
        triples: dict[str, list[str]] = defaultdict(list)  # the dependencies' queue -> triples
        for jid, after in dependants:
            for dep in dependencies(after):
                owner = owners.get(dep)
                if isinstance(owner, str) and owner.removeprefix(FINISHED_MARK) != queue:
                    triples[owner.removeprefix(FINISHED_MARK)] += (jid, dep, owner)
        verdicts: dict[str, list[str]] = {}
        named: list[bytes] = []
        for home, flat in triples.items():
            answers = await self.redis.run(REGISTER, (QueueKeys(home).jobs,), (queue, *flat))
            for i, answer in enumerate(answers):
                said = text(answer)
                verdicts[flat[3 * i + 1]] = [said[0], said[1:]]
            if any(text(answer) == "u" for answer in answers):
                named.append(json.dumps(["due_add", DUE_TALLIES, sweep, home]).encode())
        if named:
            await self.redis.apply(named, "")
        return json.dumps([*found, verdicts])

    async def settle(self, now: float, keep: str, most: int) -> int:
        """Settle up to `most` ends of dependencies marked due: how many were taken."""
        if not self.redis.split:
            took: int = await self.redis.run(
                WORKFLOW, (WF_DUE, JIDS, AWAITED), (now, keep, FINISHED_CHANNEL, most)
            )
            return took
        found = await self.redis.execute("ZRANGEBYSCORE", WF_DUE, "-inf", now, "LIMIT", 0, most)
        by_queue: dict[str, list[bytes]] = defaultdict(list)
        for entry in found:
            by_queue[json.loads(entry)[1]].append(entry)
        taken = 0
        for queue, entries in by_queue.items():
            taken += await self._settle(queue, entries, now, keep)
        return taken

    async def _settle(self, queue: str, entries: list[bytes], now: float, keep: str) -> int:
        """Split mode: ends due for dependants of one queue, settled there (each dependant's
        index entry read first), then taken from wf:due, or put off when a push is on its way."""
        jids = [json.loads(entry)[2] for entry in entries]
        reads = await self.redis.read_first([("HGET", JIDS, jid) for jid in jids])
        k = QueueKeys(queue)
        args: list[Any] = [now, keep, FINISHED_CHANNEL, reads, *entries]
        answers = await self.redis.run(SETTLE, (k.jobs, JIDS, AWAITED), args)
        done = [e for e, answer in zip(entries, answers, strict=True) if answer]
        later = [e for e, answer in zip(entries, answers, strict=True) if not answer]
        commands: list[tuple[Any, ...]] = []
        if done:
            commands.append(("ZREM", WF_DUE, *done))
        if later:
            commands.append(("ZADD", WF_DUE, "XX", *scored(later, now + LATER)))
        await self.redis.execute_many(commands)
        return len(done)


def scored(entries: Sequence[str | bytes], score: float) -> list[Any]:
    """ZADD's arguments for `entries`, each with `score`."""
    return [part for entry in entries for part in (score, entry)]
