"""MUTATE: clear, kill, discard or requeue the matching jobs of the retries, scheduled or dead
set, in every queue. Filters match as the reference's do: `jids` first, else a Redis glob over
the stored JSON and/or the jobtype.
"""

from collections.abc import Sequence

from broker.doorbell import Doorbell
from broker.errors import CommandError
from broker.glob import Glob
from broker.jobs import MutateFilter, Mutation, job_decoder
from broker.store.redis import Store

TARGETS = ("retries", "scheduled", "dead")
COMMANDS = ("clear", "kill", "discard", "requeue")
SCAN_COUNT = 500  # ZSCAN step
MAX_SCAN_STEPS = 100_000  # bound on ZSCAN steps of one MUTATE per queue


class Mutator:
    """Applies MUTATE commands; each move is one store script per batch of jobs."""

    def __init__(self, store: Store, doorbell: Doorbell, dead_ttl: float) -> None:
        self.store = store
        self.doorbell = doorbell
        self.dead_ttl = dead_ttl

    async def run(self, mutation: Mutation, queues: Sequence[str], now: float) -> None:
        if mutation.target not in TARGETS:
            raise CommandError("invalid target for mutation command")
        if mutation.cmd not in COMMANDS:
            raise CommandError("unknown mutate operation")
        flt = mutation.filter
        for queue in queues:
            if mutation.cmd == "clear" or (mutation.cmd == "discard" and _matches_all(flt)):
                await self.store.clear(queue, mutation.target)
            elif flt is not None and flt.jids:
                jids = await self.store.members(queue, mutation.target, flt.jids)
                await self._apply(mutation, queue, jids, now)
            else:
                await self._scan(mutation, queue, now)

    async def _scan(self, mutation: Mutation, queue: str, now: float) -> None:
        cursor = 0
        for _ in range(MAX_SCAN_STEPS):
            cursor, batch = await self.store.scan(queue, mutation.target, cursor, SCAN_COUNT)
            selected = [jid for jid, p in batch if p is not None and _selected(mutation, p)]
            await self._apply(mutation, queue, selected, now)
            if cursor == 0:
                return

    async def _apply(self, mutation: Mutation, queue: str, jids: list[str], now: float) -> None:
        if not jids:
            return
        if mutation.cmd == "discard":
            await self.store.remove(queue, mutation.target, jids)
        elif mutation.cmd == "kill":
            await self.store.move(queue, mutation.target, "dead", now + self.dead_ttl, jids)
        else:
            moved = await self.store.enqueue(queue, mutation.target, [(j, b"") for j in jids])
            self.doorbell.ring(queue, moved)


def _matches_all(flt: MutateFilter | None) -> bool:
    return flt is None or not (flt.jids or flt.regexp or flt.jobtype)


def _selected(mutation: Mutation, payload: bytes) -> bool:
    flt = mutation.filter
    if flt is None:
        return True
    jobtype = job_decoder.decode(payload).jobtype if flt.jobtype else ""
    return matches(flt, payload.decode(), jobtype)


def matches(flt: MutateFilter, payload: str, jobtype: str) -> bool:
    """Whether a job (its stored JSON and its jobtype) passes a regexp/jobtype filter."""
    if flt.jobtype and jobtype != flt.jobtype:
        return False
    return not flt.regexp or Glob.of(flt.regexp).match(payload)
