"""The job lifecycle: the only place that decides where a job goes next.

queue -> working (FETCH) -> gone (ACK) | retries / dead / gone (FAIL, reservation expiry);
scheduled and retries -> queue when due; dead -> gone after its TTL; MUTATE moves between sets
(mutate.py). Every move is one store call backed by one Lua script; middleware runs at the seams
where the job exists. Operations take `now` (unix seconds) so that time is a parameter. Worker
heartbeats and states are kept by workers.py.
"""

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import trio

from broker import retry
from broker.config import Config
from broker.doorbell import Doorbell
from broker.errors import JID_IN_USE, JOB_NOT_FOUND, BrokerError, CommandError, Discard
from broker.jobs import (
    QUEUE_NAME,
    FailPayload,
    Job,
    Mutation,
    check_queue_name,
    encode,
    format_day,
    format_time,
    job_decoder,
    parse_time,
    validate_new,
)
from broker.middleware import Chains, Context
from broker.mutate import Mutator
from broker.stats import Stats, render_info
from broker.store.redis import Store
from broker.workers import Workers

log = logging.getLogger(__name__)

EXPIRED_ERRTYPE = "ReservationExpired"
EXPIRED_MESSAGE = "Faktory job reservation expired"
MAX_DISCARDS = 100  # jobs one FETCH may drop through fetch middleware before giving up
MAX_BATCHES = 100  # batches one periodic run may move per queue and set
PUSH_BATCH = 1000  # jobs per push script call, so one PUSHB cannot stall Redis for long


class Fetched(msgspec.Struct, frozen=True):
    """A job handed to a worker: its queue, jid and stored payload."""

    queue: str
    jid: str
    payload: bytes


class Manager:
    """Moves jobs between queue, working, retries, scheduled and dead sets in Redis."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        chains: Chains | None = None,
        stats: Stats | None = None,
        doorbell: Doorbell | None = None,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.chains = chains or Chains()
        self.stats = stats or Stats()
        self.doorbell = doorbell or Doorbell()
        self.clock = clock
        self.rng = rng or random.Random()
        self.workers = Workers(store, config)
        self.mutator = Mutator(store, self.doorbell, config.dead_ttl)
        self._known_queues: set[str] = set()  # a cache: Redis's queue set is the truth
        self._closed = trio.Event()

    # -- push ---------------------------------------------------------------------------------

    async def push(self, job: Job, now: float) -> None:
        """Validate, run the push chain and store one job (enqueued now or scheduled)."""
        error = (await self.push_many([job], now))[0]
        if error is not None:
            raise error

    async def push_many(self, jobs: Sequence[Job], now: float) -> list[BrokerError | None]:
        """Push each job independently, in order; returns each job's error, or None.

        Jobs of one queue are stored with one script call per PUSH_BATCH jobs.
        """
        outcomes: list[BrokerError | None] = [None] * len(jobs)
        by_queue: dict[str, list[tuple[int, tuple[str, bytes, str]]]] = defaultdict(list)
        for i, job in enumerate(jobs):
            try:
                entry = await self._prepare(job, now)
            except BrokerError as exc:
                outcomes[i] = exc
            else:
                by_queue[job.queue].append((i, entry))
        for queue, items in by_queue.items():
            for start in range(0, len(items), PUSH_BATCH):
                chunk = items[start : start + PUSH_BATCH]
                stored = await self._store_jobs(queue, [entry for _, entry in chunk])
                for (i, (jid, _, _)), ok in zip(chunk, stored, strict=True):
                    if not ok:
                        outcomes[i] = CommandError(JID_IN_USE.format(jid))
        return outcomes

    async def _prepare(self, job: Job, now: float) -> tuple[str, bytes, str]:
        """Validate a pushed job and encode it: (jid, payload, score in scheduled or '')."""
        validate_new(job, now)
        check_queue_name(job.queue)
        at = ""
        if job.at:
            try:
                when = parse_time(job.at)
            except ValueError as exc:
                raise CommandError(f"invalid timestamp for 'at': \"{job.at}\": {exc}") from None
            if when > now:
                at = repr(when)
        if not at:
            job.enqueued_at = format_time(now)
        if self.chains.push:
            await self.chains.push.run(Context(job, now))
        return job.jid, encode(job), at

    async def _store_jobs(self, queue: str, entries: list[tuple[str, bytes, str]]) -> list[bool]:
        new_queue = queue not in self._known_queues
        results = await self.store.push(queue, entries, new_queue=new_queue)
        self._known_queues.add(queue)
        enqueued = sum(1 for (_, _, at), ok in zip(entries, results, strict=True) if ok and not at)
        if enqueued:
            self.doorbell.ring(queue, enqueued)
        return results

    # -- fetch --------------------------------------------------------------------------------

    async def fetch(self, queues: Sequence[str], wid: str, now: float) -> Fetched | None:
        """Reserve the first job of the first non-empty queue, waiting up to fetch_timeout."""
        found = await self.fetch_many(queues, wid, now, 1)
        return found[0] if found else None

    async def fetch_many(
        self, queues: Sequence[str], wid: str, now: float, count: int, *, wait: bool = True
    ) -> list[Fetched]:
        """Reserve up to `count` jobs, queues in priority order; waits (up to fetch_timeout,
        unless `wait` is False) only while there is none. A quiet or terminating worker gets
        nothing, after the wait, as the reference does.
        """
        if not queues:
            raise CommandError("must call fetch with at least one queue")
        for queue in queues:
            if queue not in self._known_queues:
                check_queue_name(queue)
        if not self.workers.may_fetch(wid):
            with trio.move_on_after(self.config.fetch_timeout if wait else 0):
                await self._closed.wait()
            return []
        found = await self._take(queues, wid, now, count)
        if found or not wait:
            return found
        deadline = trio.current_time() + self.config.fetch_timeout
        while not self._closed.is_set():
            with self.doorbell.listen(queues) as ticket:
                # Look again now that we listen: a push landing from here on wakes us.
                found = await self._take(queues, wid, self.clock(), count)
                if found:
                    self.doorbell.ring(found[-1].queue)  # pass the wake-up on: more may follow
                    return found
                with trio.move_on_at(deadline):
                    await ticket.wait()
                if trio.current_time() >= deadline:
                    return []
        return []

    def close(self) -> None:
        """Shutting down: waiting FETCHes answer at once with nothing."""
        self._closed.set()
        self.doorbell.ring_all()

    async def _take(self, queues: Sequence[str], wid: str, now: float, count: int) -> list[Fetched]:
        """Reserve up to `count` jobs that are there now, running the fetch chain on each."""
        found: list[Fetched] = []
        discards = 0
        reservation = self.config.reservation
        for queue in queues:
            while len(found) < count:
                wanted = 1 if self.chains.fetch else count - len(found)
                got = await self.store.fetch(queue, now, reservation, wanted)
                for jid, payload in got:
                    fetched = Fetched(queue, jid, payload)
                    try:
                        passed = not self.chains.fetch or await self._passes(fetched, now, wid)
                    except Exception:
                        for reserved in [*found, fetched]:
                            await self._release(reserved)
                        raise
                    if passed:
                        found.append(fetched)
                    else:
                        discards += 1
                if len(got) < wanted or discards >= MAX_DISCARDS:
                    break
        return found

    async def _passes(self, fetched: Fetched, now: float, wid: str) -> bool:
        """Run the fetch chain on a reserved job; False if it was discarded (and dropped)."""
        try:
            await self.chains.fetch.run(Context(job_decoder.decode(fetched.payload), now, wid))
            return True
        except Discard:
            day = format_day(now)
            await self.store.fail(fetched.queue, fetched.jid, day, b"", retry.DROP, 0)
            return False

    async def _release(self, fetched: Fetched) -> None:
        """Give a job that middleware refused to hand out straight back to its queue."""
        await self.store.requeue_reserved(fetched.queue, fetched.jid)
        self.doorbell.ring(fetched.queue)

    # -- ack / fail ---------------------------------------------------------------------------

    async def ack(self, jid: str, queue: str | None, now: float, wid: str = "") -> None:
        """Finish a reserved job. An unknown or expired jid changes nothing (reference)."""
        error = (await self.ack_many([(jid, queue)], now, wid))[0]
        if error is not None:
            raise error

    async def ack_many(
        self, acks: Sequence[tuple[str, str | None]], now: float, wid: str = ""
    ) -> list[BrokerError | None]:
        """Finish reserved jobs given as (jid, queue if known); returns each one's error.

        Jobs of one queue are finished with one script call.
        """
        outcomes: list[BrokerError | None] = [None] * len(acks)
        queues = [queue for _, queue in acks]
        unknown = [i for i, queue in enumerate(queues) if queue is None]
        if unknown:
            found = await self.store.queues_of([acks[i][0] for i in unknown])
            for i, queue in zip(unknown, found, strict=True):
                queues[i] = queue
        by_queue: dict[str, list[str]] = defaultdict(list)
        for i, ((jid, _), queue) in enumerate(zip(acks, queues, strict=True)):
            if queue is None:
                continue
            if self.chains.ack:
                try:
                    await self._run_ack_chain(queue, jid, now, wid)
                except BrokerError as exc:
                    outcomes[i] = exc
                    continue
            by_queue[queue].append(jid)
        day = format_day(now)
        for queue, jids in by_queue.items():
            await self.store.ack(queue, jids, day)
        return outcomes

    async def _run_ack_chain(self, queue: str, jid: str, now: float, wid: str) -> None:
        payload = await self.store.job(queue, jid)
        if payload is not None:
            await self.chains.ack.run(Context(job_decoder.decode(payload), now, wid))

    async def fail(self, report: FailPayload, queue: str | None, now: float, wid: str = "") -> None:
        """Record a failure and send the job to retries, dead, or away (retry 0)."""
        jid = report.jid
        if not jid:
            raise CommandError("missing JID")
        queue = queue or await self.store.queue_of(jid)
        payload = None if queue is None else await self.store.job(queue, jid)
        if queue is None or payload is None:
            raise CommandError(JOB_NOT_FOUND.format(jid))
        if not await self._fail(queue, jid, payload, report, now, wid, None):
            raise CommandError(JOB_NOT_FOUND.format(jid))

    async def _fail(
        self,
        queue: str,
        jid: str,
        payload: bytes,
        report: FailPayload,
        now: float,
        wid: str,
        latest_expiry: float | None,
    ) -> bool:
        job = job_decoder.decode(payload)
        retry.record_failure(job, report, now)
        target, score = retry.next_step(job, now, self.rng, self.config.dead_ttl)
        if self.chains.fail:
            await self.chains.fail.run(Context(job, now, wid))
        day = format_day(now)
        return await self.store.fail(queue, jid, day, encode(job), target, score, latest_expiry)

    # -- periodic moves -----------------------------------------------------------------------

    async def queues(self) -> list[str]:
        """The known queues, as Redis has them; refreshes this process's cache."""
        names = await self.store.known_queues()
        self._known_queues = set(names)
        return names

    async def enqueue_due(self, zset: str, now: float) -> int:
        """Move due jobs of `zset` (scheduled or retries) onto their queues."""
        moved = 0
        for queue in await self.queues():
            for _ in range(MAX_BATCHES):
                due = await self.store.due(queue, zset, now, self.config.reaper_batch)
                if not due:
                    break
                stamp = format_time(now)
                pairs = [(jid, _stamp(p, stamp)) for jid, p in due if p is not None]
                orphans = [jid for jid, p in due if p is None]
                count = await self.store.enqueue(queue, zset, pairs)
                await self.store.remove(queue, zset, orphans)
                if count:
                    self.doorbell.ring(queue, count)
                moved += count
                if len(due) < self.config.reaper_batch:
                    break
        return moved

    async def reap_expired(self, now: float) -> int:
        """Fail reservations that expired, as the reference does (errtype ReservationExpired)."""
        report = FailPayload(errtype=EXPIRED_ERRTYPE, message=EXPIRED_MESSAGE)
        reaped = 0
        for queue in await self.queues():
            for _ in range(MAX_BATCHES):
                due = await self.store.due(queue, "working", now, self.config.reaper_batch)
                for jid, payload in due:
                    if payload is None:
                        await self.store.fail(queue, jid, format_day(now), b"", retry.DROP, 0, now)
                    elif await self._fail(queue, jid, payload, report, now, "", now):
                        reaped += 1
                if len(due) < self.config.reaper_batch:
                    break
        return reaped

    async def purge_dead(self, now: float) -> int:
        """Delete dead jobs whose time is up."""
        purged = 0
        for queue in await self.queues():
            for _ in range(MAX_BATCHES):
                due = await self.store.due(queue, "dead", now, self.config.reaper_batch)
                purged += await self.store.remove(queue, "dead", [jid for jid, _ in due])
                if len(due) < self.config.reaper_batch:
                    break
        return purged

    # -- queues, mutate, info -----------------------------------------------------------------

    async def _select(self, names: Sequence[str]) -> list[str]:
        known = await self.queues()
        if "*" in names:
            return known
        return [n for n in names if n in self._known_queues]

    async def pause(self, names: Sequence[str], paused: bool) -> None:
        for queue in await self._select(names):
            await self.store.pause(queue, paused)
            if not paused:
                self.doorbell.ring(queue, 1_000_000)

    async def remove_queues(self, names: Sequence[str]) -> None:
        for queue in await self._select(names):
            await self.store.drop_queue(queue, self.config.reaper_batch)
            self._known_queues.discard(queue)

    async def latency(self, names: Sequence[str], now: float) -> dict[str, float]:
        """Seconds the oldest job of each queue has waited (0 for empty or unknown)."""
        if "*" in names:
            raise CommandError("QUEUE LATENCY does not support wildcards")
        result = {}
        for name in names:
            payload = await self.store.oldest(name) if QUEUE_NAME.fullmatch(name) else None
            seconds = 0.0
            if payload is not None:
                job = job_decoder.decode(payload)
                if job.enqueued_at:
                    seconds = max(0.0, now - parse_time(job.enqueued_at))
            result[name] = seconds
        return result

    async def mutate(self, mutation: Mutation, now: float) -> None:
        """Apply clear/kill/discard/requeue to the matching jobs of a set, across queues."""
        await self.mutator.run(mutation, await self.queues(), now)

    async def flush(self) -> None:
        """Delete every job, queue and counter; connected workers stay registered."""
        await self.store.flush()
        self._known_queues.clear()

    async def info(self, now: float) -> dict[str, Any]:
        queues = await self.queues()
        day = format_day(now)
        counts = await self.store.counts(queues, day)
        memory = await self.store.used_memory()
        workers = await self.store.worker_count()
        return render_info(self.stats, counts, day, now, memory, workers)


def _stamp(payload: bytes, enqueued_at: str) -> bytes:
    """The payload with `enqueued_at` refreshed, as every enqueue does."""
    job = job_decoder.decode(payload)
    job.enqueued_at = enqueued_at
    return encode(job)
