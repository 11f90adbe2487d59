"""MUTATE: clear, kill, discard or requeue the matching jobs of the retries, scheduled or dead
set, in every queue that has any (the due index names them). Filters match as the reference's
do: `jids` first (found through the jid index), else a Redis glob over the stored JSON and/or
the jobtype. Each move is one script per batch that acts on an entry only while it is still as
it was read (same jid, same score).
"""

from collections import defaultdict

import msgspec

from hopper_broker.config import Settings
from hopper_broker.doorbell import Doorbell
from hopper_broker.fetching import stored_expiry
from hopper_broker.glob import Glob
from hopper_broker.store.jobs import Entry
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import MutateFilter, Mutation, format_time, job_decoder

TARGETS = ("retries", "scheduled", "dead")
COMMANDS = ("clear", "kill", "discard", "requeue")
SCAN_COUNT = 500  # ZSCAN step
MAX_SCAN_STEPS = 100_000  # bound on ZSCAN steps of one MUTATE per queue
CLEAR_BATCH = 1000  # jobs deleted per script call by clear
MAX_CLEAR_BATCHES = 100_000  # bound on those calls per queue


class Mutator:
    """Applies MUTATE commands."""

    def __init__(self, store: Store, settings: Settings, doorbell: Doorbell) -> None:
        self.store = store
        self.settings = settings
        self.doorbell = doorbell

    async def run(self, mutation: Mutation, now: float) -> int:
        """Apply one MUTATE; returns how many jobs it moved or deleted."""
        if mutation.target not in TARGETS:
            raise CommandError("invalid target for mutation command")
        if mutation.cmd not in COMMANDS:
            raise CommandError("unknown mutate operation")
        flt, done = mutation.filter, 0
        if mutation.cmd == "clear" or (mutation.cmd == "discard" and _matches_all(flt)):
            for queue in await self.store.sets.queues_with(mutation.target):
                done += await self._clear(queue, mutation.target)
        elif flt is not None and flt.jids:
            by_queue: dict[str, list[str]] = defaultdict(list)
            found = await self.store.jobs.queues_of(flt.jids)
            for jid, owner in zip(flt.jids, found, strict=True):
                if owner is not None:
                    by_queue[owner].append(jid)
            for queue, jids in by_queue.items():
                entries = await self.store.sets.scores(queue, mutation.target, jids)
                done += await self._apply(mutation, queue, entries, now)
        else:
            for queue in await self.store.sets.queues_with(mutation.target):
                done += await self._scan(mutation, queue, now)
        return done

    async def _clear(self, queue: str, zset: str) -> int:
        done = 0
        for _ in range(MAX_CLEAR_BATCHES):
            removed = await self.store.sets.remove_first(queue, zset, CLEAR_BATCH)
            done += removed
            if removed < CLEAR_BATCH:
                break
        return done

    async def _scan(self, mutation: Mutation, queue: str, now: float) -> int:
        cursor, done = 0, 0
        for _ in range(MAX_SCAN_STEPS):
            cursor, batch = await self.store.sets.scan(queue, mutation.target, cursor, SCAN_COUNT)
            selected = [e for e in batch if e[2] is not None and _selected(mutation, e[2])]
            done += await self._apply(mutation, queue, selected, now)
            if cursor == 0:
                break
        return done

    async def _apply(self, mutation: Mutation, queue: str, entries: list[Entry], now: float) -> int:
        if not entries:
            return 0
        target = mutation.target
        if mutation.cmd == "discard":
            return await self.store.sets.remove(queue, target, entries)
        if mutation.cmd == "kill":
            config = self.settings()
            score = now + config.dead_ttl
            return await self.store.sets.move(
                queue, target, "dead", score, entries, now, config.history_mode
            )
        stamp, expiries = format_time(now), _expiries(entries)
        moved = await self.store.sets.requeue(queue, target, stamp, entries, expiries)
        self.doorbell.ring(queue, moved)
        return moved


def _expiries(entries: list[Entry]) -> dict[str, float]:
    """When each requeued job that has an expiry expires (a dead one kept no expiry entry)."""
    found = {}
    for jid, _, payload in entries:
        if payload and b'"expires_at"' in payload:
            try:
                when = stored_expiry(job_decoder.decode(payload))
            except msgspec.DecodeError:
                continue
            if when is not None:
                found[jid] = when
    return found


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
