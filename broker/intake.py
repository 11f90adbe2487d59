"""Taking jobs in: PUSH and PUSHB, one job at a time or many per script call.

A pushed job is validated (the reference's rules and texts), its rules read (unique, backoff,
expiry: policy.py), the push middleware run, and then stored with its queue's other jobs in
one script call, which also enforces what only Redis can decide at once: a live jid, a held
unique lock, a full or draining queue, a cron tick already enqueued.
"""

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import trio

from hopper_broker.batches import member_of, no_such_batch
from hopper_broker.config import Settings
from hopper_broker.doorbell import Doorbell
from hopper_broker.errors import Unreplicated
from hopper_broker.middleware import Chains, Context
from hopper_broker.policy import NOT_UNIQUE, due_at, settle_rules
from hopper_broker.store.pushes import PushEntry
from hopper_broker.store.redis import Store
from hopper_broker.workflows import after_of, graph_order, refusal
from hopper_client.schema.errors import JID_IN_USE, BrokerError, CommandError
from hopper_client.schema.jobs import (
    Job,
    check_queue_name,
    encode,
    format_time,
    validate_new,
)

PUSH_BATCH = 1000  # jobs per push script call, so one PUSHB cannot stall Redis for long
LIMITS_TTL = 1.0  # seconds a queue's push limits (max_size, draining) read from Redis are used
MAX_LIMITS = 10_000  # queues whose limits are remembered; the memory starts over beyond
CLAIMED = BrokerError("that tick was already enqueued", "CLAIMED")


class Intake:
    """Validates and stores pushed jobs."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        chains: Chains,
        doorbell: Doorbell,
        kept: Callable[[], str],
    ) -> None:
        self.store = store
        self.settings = settings
        self.chains = chains
        self.doorbell = doorbell
        self.kept = kept
        self._limits: dict[str, tuple[str, float]] = {}  # queue -> (limits, when read)

    async def limits(self, queue: str) -> str:
        """The queue's push limits ('D' draining, else its max_size or ''), read from Redis
        at most once every LIMITS_TTL seconds by this process: QUEUE SET and DRAIN made
        through another broker reach this one within that time."""
        now = trio.current_time()
        found = self._limits.get(queue)
        if found is None or now - found[1] > LIMITS_TTL:
            if len(self._limits) >= MAX_LIMITS:
                self._limits.clear()
            found = self._limits[queue] = (await self.store.queues.push_limits(queue), now)
        return found[0]

    def forget_limits(self) -> None:
        """Read every queue's limits again (they were just changed through this broker)."""
        self._limits.clear()

    async def push_many(
        self,
        jobs: Sequence[Job],
        now: float,
        claim: tuple[str, float] | None = None,
        callback: tuple[str, str] | None = None,
    ) -> list[BrokerError | None]:
        """Push each job independently, in order; returns each job's error, or None.

        Jobs of one queue are stored with one script call per PUSH_BATCH jobs. With `claim`
        (a cron entry id and tick, for at most PUSH_BATCH jobs of one queue) nothing is pushed
        unless that tick is later than the entry's last (CLAIMED for each job otherwise); the
        claim is recorded once the script runs, even if it refuses a job (jid in use, not
        unique, full); a job refused before (validation, middleware) records none. With
        `callback` (bid, kind) the one job is that batch's callback, stored only while the
        batch may push it (CLAIMED otherwise); any other job joins the batch its custom.bid
        names (`No such batch <bid>` when there is none). Jobs that refer to each other by
        custom.after form a graph (see workflows.py), stored all or nothing.
        """
        outcomes: list[BrokerError | None] = [None] * len(jobs)
        since = self.store.connection()
        by_queue: dict[str, list[tuple[int, PushEntry]]] = defaultdict(list)
        prepared: list[tuple[int, PushEntry]] = []
        for i, job in enumerate(jobs):
            try:
                prepared.append((i, await self._prepare(job, now, callback)))
            except BrokerError as exc:
                outcomes[i] = exc
        # one job alone is no graph (it cannot depend on itself): the common PUSH skips the look
        graph = self._graph(jobs, prepared, outcomes) if len(jobs) > 1 else None
        if graph is not None:
            if graph:
                await self._store_graph(jobs, graph, now, claim, outcomes)
            await self._replicated(outcomes, since, {job.queue for job in jobs})
            return outcomes
        for i, entry in prepared:
            by_queue[jobs[i].queue].append((i, entry))
        for queue, items in by_queue.items():
            for start in range(0, len(items), PUSH_BATCH):
                await self._store(queue, items[start : start + PUSH_BATCH], now, claim, outcomes)
        await self._replicated(outcomes, since, by_queue.keys())
        return outcomes

    async def _replicated(
        self, outcomes: list[BrokerError | None], since: int, queues: Iterable[str]
    ) -> None:
        """With push_replicas, the jobs stored (in `queues`) are answered +OK only once that
        many replicas have them (WAIT); otherwise they get an error saying so (they stay
        stored)."""
        config = self.settings()
        wanted = config.push_replicas
        if not wanted or all(outcome is not None for outcome in outcomes):
            return
        acked = await self.store.replicated(wanted, config.push_replicas_timeout, since, queues)
        if acked < wanted:
            unsafe = Unreplicated(acked, wanted, config.push_replicas_timeout)
            outcomes[:] = [outcome or unsafe for outcome in outcomes]

    async def _store(
        self,
        queue: str,
        chunk: list[tuple[int, PushEntry]],
        now: float,
        claim: tuple[str, float] | None,
        outcomes: list[BrokerError | None],
        graph: bool = False,
    ) -> None:
        """One push script call for jobs of one queue; refusals noted in `outcomes`."""
        entries = [entry for _, entry in chunk]
        limits = await self.limits(queue)
        keep = self.kept()
        stored = await self.store.pushes.push(queue, entries, now, keep, claim, limits, graph)
        self._settle(queue, chunk, stored, outcomes)

    async def _store_graph(
        self,
        jobs: Sequence[Job],
        graph: list[tuple[int, PushEntry]],
        now: float,
        claim: tuple[str, float] | None,
        outcomes: list[BrokerError | None],
    ) -> None:
        """A workflow pushed in one PUSHB: one script call, all or nothing, whatever the
        number of queues its jobs are in."""
        by_queue: dict[str, list[tuple[int, PushEntry]]] = defaultdict(list)
        for i, entry in graph:
            by_queue[jobs[i].queue].append((i, entry))
        if len(by_queue) == 1:
            await self._store(jobs[graph[0][0]].queue, graph, now, claim, outcomes, True)
            return
        segments = [
            (queue, [entry for _, entry in items], await self.limits(queue))
            for queue, items in by_queue.items()
        ]
        stored = iter(await self.store.pushes.push_graph(segments, now, self.kept()))
        for queue, items in by_queue.items():
            self._settle(queue, items, [next(stored) for _ in items], outcomes)

    def _settle(
        self,
        queue: str,
        chunk: list[tuple[int, PushEntry]],
        stored: list[tuple[int, str]],
        outcomes: list[BrokerError | None],
    ) -> None:
        """Note the push script's results: refusals in `outcomes`; wake FETCHes for the rest."""
        enqueued = 0
        for (i, (jid, _, at, _, _, batch, _)), (result, named) in zip(chunk, stored, strict=True):
            if result == 1:
                enqueued += not at
            else:
                outcomes[i] = refusal(result, named) or _refusal(result, jid, queue, batch)
        self.doorbell.ring(queue, enqueued)

    @staticmethod
    def _graph(
        jobs: Sequence[Job],
        prepared: list[tuple[int, PushEntry]],
        outcomes: list[BrokerError | None],
    ) -> list[tuple[int, PushEntry]] | None:
        """The jobs of a PUSHB that refer to each other, dependencies first, when they do
        (None otherwise): every job is then refused if one is, at most PUSH_BATCH of them (in
        any queues); [] when refused (outcomes say why)."""
        try:
            found = zip(_by(prepared, jobs), jobs, strict=True)
            afters = [e[6] if e else _after(j) for e, j in found]
            order = graph_order([j.jid for j in jobs], afters)
        except BrokerError as exc:
            outcomes[:] = [exc] * len(jobs)
            return []
        if order is None:
            return None
        if any(outcomes):
            outcomes[:] = [o or refusal(9, "") for o in outcomes]
            return []
        if len(jobs) > PUSH_BATCH:
            wrong = f"a workflow pushed in one PUSHB holds {PUSH_BATCH} jobs at most"
            outcomes[:] = [CommandError(wrong)] * len(jobs)
            return []
        entries = dict(prepared)
        return [(i, entries[i]) for i in order]

    async def _prepare(
        self, job: Job, now: float, callback: tuple[str, str] | None = None
    ) -> PushEntry:
        """Validate a pushed job and encode it: (jid, payload, score in scheduled or '', the
        unique lock it asks for, when it expires, its batch).

        `enqueued_at` is the broker's: set now for a job enqueued now, stamped by the store
        when a scheduled job is enqueued later.
        """
        validate_new(job, now)
        check_queue_name(job.queue)
        at = due_at(job, now)
        job.enqueued_at = "" if at else format_time(now)
        if self.chains.push:  # middleware may change the job: its rules are read after it
            await self.chains.push.run(Context(job, now))
            check_queue_name(job.queue)
        unique, expires = settle_rules(job, now, at)
        batch = callback or member_of(job)
        after = after_of(job)
        return job.jid, encode(job), at, unique, expires, batch, after


def _by(prepared: list[tuple[int, PushEntry]], jobs: Sequence[Job]) -> list[PushEntry | None]:
    """The prepared entry of each job, by position (None: refused before)."""
    found: list[PushEntry | None] = [None] * len(jobs)
    for i, entry in prepared:
        found[i] = entry
    return found


def _after(job: Job) -> str:
    """The dependencies of a job refused before it was prepared (an invalid job still names the
    jobs of its graph, which are then refused with it), as after_of() gives them, or ''."""
    after = (job.custom or {}).get("after")
    if not isinstance(after, list):
        return ""
    return json.dumps(["fail", *(d for d in after if isinstance(d, str) and d != job.jid)])


def _refusal(result: int, jid: str, queue: str, batch: tuple[str, str] | None) -> BrokerError:
    """The error for a push script result other than 1 (stored)."""
    if result == 6 and batch is not None:
        return no_such_batch(batch[0])
    if result == 2:
        return NOT_UNIQUE
    if result == 3:
        return CLAIMED
    if result == 4:
        return BrokerError(f"queue {queue} is full", "FULL")
    if result == 5:
        return BrokerError(f"queue {queue} is draining: pushes are refused", "DRAINING")
    return CommandError(JID_IN_USE.format(jid))
