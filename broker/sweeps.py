"""The periodic moves the reaper loops make (reapers.py), each visiting only what is due: the
queues the due index names, and the workers that fell silent.

Scheduled and retrying jobs are enqueued when due; reservations that expired are failed
(errtype ReservationExpired, as in the reference); jobs held by a worker that was not heard
from (BEAT or FETCH) for worker_ttl are failed at once (errtype WorkerLost) instead of at
their reservation's end; dead jobs and kept finished ones are purged when their time is up.
"""

from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from hopper_broker.config import Settings
from hopper_broker.doorbell import Doorbell
from hopper_broker.store.jobs import Reservation
from hopper_broker.store.redis import Store
from hopper_client.schema.jobs import FailPayload, format_time

EXPIRED_ERRTYPE = "ReservationExpired"
EXPIRED_MESSAGE = "Faktory job reservation expired"
LOST_ERRTYPE = "WorkerLost"
LOST_MESSAGE = "the worker holding the job was not heard from for worker_ttl seconds"
MAX_BATCHES = 100  # batches one periodic run may move per queue and set
DUE_PAGE = 1000  # queues read from a due index at a time
MAX_DUE_PAGES = 100  # pages of due queues one periodic run goes through
MAX_HELD_STEPS = 1000  # SSCAN steps over one lost worker's held set per run

Fail = Callable[[str, str, Reservation, FailPayload, float, str], Awaitable[int]]


class Sweeps:
    """The periodic moves; `fail` fails one reservation as read (Manager.fail_reservation)."""

    def __init__(self, store: Store, settings: Settings, doorbell: Doorbell, fail: Fail) -> None:
        self.store = store
        self.settings = settings
        self.doorbell = doorbell
        self.fail = fail

    async def enqueue_due(self, zset: str, now: float) -> int:
        """Move due jobs of `zset` (scheduled or retries) onto their queues."""
        batch = self.settings().reaper_batch
        stamp = format_time(now)
        moved = 0
        async for queue in self._due_queues(zset, now):
            for _ in range(MAX_BATCHES):
                count, selected = await self.store.sets.enqueue_due(queue, zset, now, stamp, batch)
                self.doorbell.ring(queue, count)
                moved += count
                if selected < batch:
                    break
        return moved

    async def reap_expired(self, now: float) -> int:
        """Fail reservations that expired, as the reference does (errtype ReservationExpired)."""
        report = FailPayload(errtype=EXPIRED_ERRTYPE, message=EXPIRED_MESSAGE)
        batch = self.settings().reaper_batch
        reaped = 0
        async for queue in self._due_queues("working", now):
            for _ in range(MAX_BATCHES):
                expired = await self.store.sets.expired(queue, "working", now, batch)
                holders = await self.store.jobs.holders(queue, [jid for jid, _, _ in expired])
                for (jid, expiry, payload), holder in zip(expired, holders, strict=True):
                    reservation = Reservation(expiry, payload, holder)
                    if await self.fail(queue, jid, reservation, report, now, "") == 1:
                        reaped += 1
                if len(expired) < batch:
                    break
            await self.store.sets.refresh_due(queue, "working")
        return reaped

    async def reap_lost(self, now: float) -> int:
        """Fail the jobs still held by workers that went (their record deleted: the last
        connection closed, or no BEAT for worker_ttl) and were not heard from for worker_ttl;
        returns how many. A worker is forgotten here once nothing it fetched is left to look
        at, or once it came back."""
        config = self.settings()
        cutoff, batch = now - config.worker_ttl, config.reaper_batch
        report = FailPayload(errtype=LOST_ERRTYPE, message=LOST_MESSAGE)
        failed = 0
        for wid in await self.store.workers.lost(cutoff, batch):
            cursor, stale = 0, []
            for _ in range(MAX_HELD_STEPS):
                cursor, entries = await self.store.workers.held(wid, cursor, batch)
                by_queue: dict[str, list[str]] = defaultdict(list)
                for queue, jid in entries:
                    by_queue[queue].append(jid)
                for queue, jids in by_queue.items():
                    for jid, reservation in await self._held_by(queue, jids, wid):
                        if reservation is None:
                            stale.append((queue, jid))
                        elif await self.fail(queue, jid, reservation, report, now, "") == 1:
                            failed += 1
                if cursor == 0:
                    break
            await self.store.workers.forget_lost(wid, stale)
        return failed

    async def _held_by(
        self, queue: str, jids: list[str], wid: str
    ) -> list[tuple[str, Reservation | None]]:
        """Each jid with its reservation if `wid` still holds it, else None."""
        reservations = await self.store.jobs.reservations(queue, jids)
        return [
            (jid, reservation if reservation is not None and reservation.holder == wid else None)
            for jid, reservation in zip(jids, reservations, strict=True)
        ]

    async def purge_dead(self, now: float) -> int:
        """Delete dead jobs whose time is up."""
        batch = self.settings().reaper_batch
        purged = 0
        async for queue in self._due_queues("dead", now):
            for _ in range(MAX_BATCHES):
                removed = await self.store.sets.remove_due(queue, "dead", now, batch)
                purged += removed
                if removed < batch:
                    break
        return purged

    async def purge_finished(self, now: float) -> int:
        """Delete the finished jobs kept for finished_ttl, and the notes of JOB WAITs that are
        over."""
        config = self.settings()
        batch, before = config.reaper_batch, now - config.finished_ttl
        purged = 0
        async for queue in self._due_queues("finished", before):
            for _ in range(MAX_BATCHES):
                removed = await self.store.sets.purge_finished(queue, before, batch)
                purged += removed
                if removed < batch:
                    break
        await self.store.tracking.forget_awaited(now)
        return purged

    async def next_due(self, zset: str) -> float | None:
        """When the earliest entry of `zset` in any queue comes due (None: there is none)."""
        return await self.store.sets.next_due(zset)

    async def _due_queues(self, zset: str, now: float) -> AsyncIterator[str]:
        """The queues with entries of `zset` due at `now`, each once per run. A queue visited
        has its due entry moved past `now` (or dropped), so the next page holds new ones."""
        seen: set[str] = set()
        for _ in range(MAX_DUE_PAGES):
            page = await self.store.sets.due_queues(zset, now, DUE_PAGE)
            fresh = [queue for queue in page if queue not in seen]
            for queue in fresh:
                seen.add(queue)
                yield queue
            if len(page) < DUE_PAGE or not fresh:
                return
