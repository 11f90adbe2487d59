"""The job lifecycle: the only place that decides where a job goes next.

queue -> working (FETCH) -> finished (ACK) | retries / dead / finished (FAIL, reservation
expiry, lost worker) | scheduled (JOB SNOOZE); scheduled and retries -> queue when due; dead ->
gone after its TTL; a finished job's final record -> gone after finished_ttl. The rooms this
manager owns: the periodic moves (sweeps.py), MUTATE (mutate.py), queue pause/remove/latency,
FLUSH and INFO (admin.py), jobs by jid and JOB CANCEL (tracking.py), the worker registry
(workers.py), the periodic jobs (crontab.py), batches (batches.py). Every move is one store
call backed by one Lua script; middleware runs at the seams where the job exists. Operations
take `now` (unix seconds) so that time is a parameter; the broker's clock is Redis's
(clock.py).
"""

import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from hopper_broker import retry
from hopper_broker.admin import Admin
from hopper_broker.batches import Batches
from hopper_broker.clock import Clock
from hopper_broker.config import Config, Settings
from hopper_broker.crontab import Crontab
from hopper_broker.doorbell import Doorbell
from hopper_broker.fetching import Fetched, Fetching, stored_expiry
from hopper_broker.history import History
from hopper_broker.intake import Intake
from hopper_broker.listing import Listing
from hopper_broker.middleware import Chains, Context
from hopper_broker.mutate import Mutator
from hopper_broker.stats import Stats
from hopper_broker.store.jobs import Acked, Reservation
from hopper_broker.store.redis import Store
from hopper_broker.sweeps import Sweeps
from hopper_broker.tracking import Tracking
from hopper_broker.workers import Workers
from hopper_broker.workflows import Workflows
from hopper_client.schema.errors import (
    INVALID_RESULT,
    JOB_NOT_FOUND,
    RESULT_TOO_LARGE,
    BrokerError,
    CommandError,
)
from hopper_client.schema.jobs import (
    FailPayload,
    Job,
    encode,
    format_day,
    job_decoder,
)

FAIL_READS = 3  # reads of a reservation that changes under a FAIL before giving up
MAX_SNOOZE = 365 * 86_400  # seconds a JOB SNOOZE may put a job off


class Manager:
    """Moves jobs between queue, working, retries, scheduled and dead sets in Redis."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        chains: Chains | None = None,
        stats: Stats | None = None,
        doorbell: Doorbell | None = None,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.chains = chains if chains is not None else Chains()
        self.stats = stats or Stats()
        self.doorbell = doorbell or Doorbell()
        self.clock = clock
        self.rng = rng or random.Random()
        self.workers = Workers(store, settings)
        self.mutator = Mutator(store, settings, self.doorbell)
        self.intake = Intake(store, settings, self.chains, self.doorbell, self.kept)
        self.listing = Listing(store, settings)
        self.admin = Admin(
            store, self.doorbell, self.stats, clock, self.listing, self.intake.forget_limits
        )
        self.finishes = Doorbell()  # JOB WAITs, by jid
        self.tracking = Tracking(store, settings, clock, self.finishes, self.kept)
        self.sweeps = Sweeps(store, settings, self.doorbell, self.fail_reservation)
        self.cron = Crontab(store, settings, self.push_many)
        self.batches = Batches(store, settings, self.push_many)
        store.redis.on_batch_due = self.batches.wake
        self.workflows = Workflows(store, settings, self.kept, self.tracking.find)
        self.history = History(store, settings)
        self.fetching = Fetching(
            store, settings, self.chains, self.doorbell, self.workers, clock, self.kept
        )
        self._kept: tuple[Config | None, str] = (None, "")  # kept(), for the settings it read

    # -- push ---------------------------------------------------------------------------------

    async def push(self, job: Job, now: float) -> None:
        """Validate, run the push chain and store one job (enqueued now or scheduled)."""
        error = (await self.push_many([job], now))[0]
        if error is not None:
            raise error

    async def push_many(
        self,
        jobs: Sequence[Job],
        now: float,
        claim: tuple[str, float] | None = None,
        callback: tuple[str, str] | None = None,
    ) -> list[BrokerError | None]:
        """Push each job independently, in order; returns each job's error, or None (see
        intake.py)."""
        return await self.intake.push_many(jobs, now, claim, callback)

    # -- fetch --------------------------------------------------------------------------------

    async def fetch(self, queues: Sequence[str], wid: str, now: float) -> Fetched | None:
        """Reserve the first job of the first non-empty queue, waiting up to fetch_timeout."""
        found = await self.fetch_many(queues, wid, now, 1)
        return found[0] if found else None

    async def fetch_many(
        self, queues: Sequence[str], wid: str, now: float, count: int, *, wait: bool = True
    ) -> list[Fetched]:
        """Reserve up to `count` jobs, queues in priority order; waits (up to fetch_timeout,
        unless `wait` is False) only while there is none (fetching.py)."""
        return await self.fetching.fetch_many(queues, wid, now, count, wait=wait)

    def close(self) -> None:
        """Shutting down: waiting FETCHes and JOB WAITs answer at once."""
        self.fetching.close()
        self.finishes.ring_all()

    # -- ack / fail ---------------------------------------------------------------------------

    async def ack(
        self, jid: str, queue: str | None, now: float, wid: str = "", result: bytes = b""
    ) -> None:
        """Finish a reserved job, with its result (JSON, or b''). An unknown or expired jid
        changes nothing (reference)."""
        error = (await self.ack_many([Acked(jid, queue, result, wid)], now))[0]
        if error is not None:
            raise error

    async def ack_many(self, acks: Sequence[Acked], now: float) -> list[BrokerError | None]:
        """Finish reserved jobs; returns each one's error. Jobs of one queue are finished with
        one script call, whichever workers report them.
        """
        outcomes: list[BrokerError | None] = [None] * len(acks)
        limit = self.settings().max_result_bytes
        for i, ack in enumerate(acks):
            if len(ack.result) > limit:
                outcomes[i] = CommandError(RESULT_TOO_LARGE.format(limit))
            elif ack.result:
                outcomes[i] = _unreadable(ack.result)
        queues = [ack.queue for ack in acks]
        unknown = [i for i, queue in enumerate(queues) if queue is None]
        if unknown:
            found = await self.store.jobs.queues_of([acks[i].jid for i in unknown])
            for i, queue in zip(unknown, found, strict=True):
                queues[i] = queue
        by_queue: dict[str, list[Acked]] = defaultdict(list)
        for i, (ack, queue) in enumerate(zip(acks, queues, strict=True)):
            if queue is None or outcomes[i] is not None:
                continue
            if self.chains.ack:
                try:
                    await self._run_ack_chain(queue, ack.jid, now, ack.wid)
                except BrokerError as exc:
                    outcomes[i] = exc
                    continue
            by_queue[queue].append(ack)
        day, keep = format_day(now), self.kept()
        for queue, done in by_queue.items():
            _, due = await self.store.jobs.ack(queue, done, day, now, keep)
            if due or self.batches.due:  # a batch callback: pushed before the ACK's reply, as
                # Enterprise does (split mode: it came due in the ACK's second step)
                await self.batches.fire(now)
                await self.workflows.settle(now)  # and dependants released before it too
            if queue in self.fetching.held_back:  # a FETCH held back by its limits may go on
                self.doorbell.ring(queue)
        return outcomes

    async def follow_ups(self, now: float) -> int:
        """One pass of the batches loop: due batch callbacks and purges, workflows' ends due."""
        return await self.batches.tick(now) + await self.workflows.settle(now)

    def kept(self) -> str:
        """The finishing scripts' keep policy (keep_policy() in scripts/lib.lua): how many
        finished jobs each queue keeps (0 when finished_ttl is 0), and whether the history
        archives them ('a': with their args, 'n': without)."""
        config = self.settings()
        if config is not self._kept[0]:  # read again only after a reload
            most = config.finished_max if config.finished_ttl > 0 else 0
            self._kept = (config, f"{most} {config.history_mode}")
        return self._kept[1]

    async def _run_ack_chain(self, queue: str, jid: str, now: float, wid: str) -> None:
        payload = await self.store.jobs.payload(queue, jid)
        if payload is not None:
            await self.chains.ack.run(Context(job_decoder.decode(payload), now, wid))

    async def fail(self, report: FailPayload, queue: str | None, now: float, wid: str = "") -> None:
        """Record a failure and send the job to retries, dead, or away (retry 0).

        `queue` is where the caller last saw the job (None: look it up by jid).
        """
        if not report.jid:
            raise CommandError("missing JID")

        async def step(queue: str, reservation: Reservation) -> int:
            return await self.fail_reservation(queue, report.jid, reservation, report, now, wid)

        await self._end(report.jid, queue, step)
        if self.batches.due:  # a batch callback came due: pushed before the FAIL's reply
            await self.batches.fire(now)
            await self.workflows.settle(now)

    async def snooze(self, jid: str, seconds: float, queue: str | None, now: float) -> None:
        """Hand a reserved job back to run again `seconds` from now, without using a retry
        and without counting a failure (JOB SNOOZE)."""
        if not 0 <= seconds <= MAX_SNOOZE:
            raise CommandError(f"JOB SNOOZE: seconds must be between 0 and {MAX_SNOOZE}")

        async def step(queue: str, reservation: Reservation) -> int:
            day, payload, keep = format_day(now), reservation.payload, self.kept()
            target = "scheduled" if payload else retry.DROP  # no record: nothing to run again
            expiry, holder = reservation.expiry, reservation.holder
            expires = stored_expiry(job_decoder.decode(payload)) if payload else None
            return await self.store.jobs.fail(
                queue,
                jid,
                expiry,
                day,
                target,
                now + seconds,
                payload or b"",
                now,
                keep,
                holder,
                expires=expires,
            )

        await self._end(jid, queue, step)

    async def _end(
        self, jid: str, queue: str | None, step: Callable[[str, Reservation], Awaitable[int]]
    ) -> None:
        """End the reservation of `jid` with `step` (a store call acting only on the
        reservation it is given: 1 done, 0 gone, -1 changed since read); reads again when the
        job moved. `queue` is where the caller last saw the job (None: look it up)."""
        for _ in range(FAIL_READS):
            reservation = None if queue is None else await self.store.jobs.reservation(queue, jid)
            if reservation is None:
                found = (await self.store.jobs.queues_of([jid]))[0]
                if found is None or found == queue:
                    break
                queue = found
                continue
            assert queue is not None
            outcome = await step(queue, reservation)
            if outcome >= 0:
                if outcome:
                    return
                break
        raise CommandError(JOB_NOT_FOUND.format(jid))

    async def fail_reservation(
        self,
        queue: str,
        jid: str,
        reservation: Reservation,
        report: FailPayload,
        now: float,
        wid: str,
    ) -> int:
        """Fail the reservation as read: 1 done, 0 gone, -1 changed since it was read."""
        day, keep, holder = format_day(now), self.kept(), reservation.holder
        if reservation.payload is None:  # a reservation without a record: nothing to retry
            return await self.store.jobs.fail(
                queue, jid, reservation.expiry, day, retry.DROP, 0, b"", now, "0", holder
            )
        job = job_decoder.decode(reservation.payload)
        retry.record_failure(job, report, now)
        target, score = retry.next_step(job, now, self.rng, self.settings().dead_ttl)
        if self.chains.fail:
            await self.chains.fail.run(Context(job, now, wid))
        payload, expires = encode(job), stored_expiry(job)
        errtype = job.failure.errtype if job.failure else ""
        return await self.store.jobs.fail(
            queue,
            jid,
            reservation.expiry,
            day,
            target,
            score,
            payload,
            now,
            keep,
            holder,
            errtype,
            expires,
        )


def _unreadable(result: bytes) -> CommandError | None:
    """The error for a result no reader could decode (valid JSON text, but a number out of
    range), else None."""
    try:
        msgspec.json.decode(result)
    except msgspec.DecodeError as exc:
        return CommandError(INVALID_RESULT.format(exc))
    return None
