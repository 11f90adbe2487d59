"""The FETCH room: reserve waiting jobs for workers, in their queues' priority order, run the
fetch middleware on each, and wait on the doorbell while there is none."""

from collections.abc import Callable, Sequence

import msgspec
import trio

from hopper_broker.config import Settings
from hopper_broker.doorbell import Doorbell
from hopper_broker.errors import Discard
from hopper_broker.middleware import Chains, Context
from hopper_broker.policy import expiry_of
from hopper_broker.store.redis import Store
from hopper_broker.workers import Workers
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import Job, check_queue_name, job_decoder

MAX_DISCARDS = 100  # jobs one FETCH may drop through fetch middleware before giving up


class Fetched(msgspec.Struct, frozen=True):
    """A job handed to a worker: its queue, jid and stored payload."""

    queue: str
    jid: str
    payload: bytes


class Fetching:
    """Hands out jobs to FETCHes, waiting for them up to fetch_timeout."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        chains: Chains,
        doorbell: Doorbell,
        workers: Workers,
        clock: Callable[[], float],
        kept: Callable[[], str],
    ) -> None:
        self.store = store
        self.settings = settings
        self.chains = chains
        self.doorbell = doorbell
        self.workers = workers
        self.clock = clock
        self.kept = kept
        self.closed = trio.Event()
        self.held_back: set[str] = set()  # queues whose limits held a FETCH back last time

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
            check_queue_name(queue)
        timeout = self.settings().fetch_timeout if wait else 0
        if not await self.workers.may_fetch(wid):
            with trio.move_on_after(timeout):
                await self.closed.wait()
            return []
        if not wait:
            return (await self._take(queues, wid, now, count))[0]
        deadline = trio.current_time() + timeout
        woken = False
        while not self.closed.is_set():
            with self.doorbell.listen(queues) as ticket:
                # Listen, then look: a push landing from here on wakes us.
                looked_at = trio.current_time()  # limits' waits count from `now`, not the reply
                found, held_back = await self._take(queues, wid, now, count)
                if found:
                    if woken or ticket.is_set():  # pass on a wake-up we took: more may follow
                        self.doorbell.ring(found[-1].queue)
                    return found
                retry_at = deadline if held_back is None else looked_at + held_back
                with trio.move_on_at(min(deadline, retry_at)):
                    await ticket.wait()
                if trio.current_time() >= deadline:
                    return []
            woken, now = ticket.is_set(), self.clock()
        return []

    def close(self) -> None:
        """Shutting down: waiting FETCHes answer at once with nothing."""
        self.closed.set()
        self.doorbell.ring_all()

    async def _take(
        self, queues: Sequence[str], wid: str, now: float, count: int
    ) -> tuple[list[Fetched], float | None]:
        """Reserve up to `count` jobs that are there now, running the fetch chain on each;
        also, when a queue's limits held jobs back, the seconds until one may be given."""
        found: list[Fetched] = []
        discards = 0
        held_back: float | None = None
        reservation, keep = self.settings().reservation, self.kept()
        for queue in queues:
            while len(found) < count:
                wanted = 1 if self.chains.fetch else count - len(found)
                got, wait = await self.store.jobs.fetch(queue, now, reservation, wanted, wid, keep)
                if wait is not None:
                    held_back = wait if held_back is None else min(held_back, wait)
                    self.held_back.add(queue)
                else:
                    self.held_back.discard(queue)
                for jid, payload in got:
                    fetched = Fetched(queue, jid, payload)
                    try:
                        passed = not self.chains.fetch or await self._passes(fetched, now, wid)
                    except Exception:
                        for reserved in [*found, fetched]:
                            await self.release(reserved, now, wid)
                        raise
                    if passed:
                        found.append(fetched)
                    else:
                        discards += 1
                if len(got) < wanted or discards >= MAX_DISCARDS:
                    break
        return found, held_back

    async def _passes(self, fetched: Fetched, now: float, wid: str) -> bool:
        """Run the fetch chain on a reserved job; False if it was discarded (and dropped)."""
        try:
            await self.chains.fetch.run(Context(job_decoder.decode(fetched.payload), now, wid))
            return True
        except Discard:
            await self.store.jobs.drop(fetched.queue, fetched.jid, now, self.kept(), wid)
            return False

    async def release(self, fetched: Fetched, now: float, wid: str) -> None:
        """Give a job that middleware refused to hand out straight back to its queue; one
        whose cancel was asked for meanwhile ends cancelled instead."""
        expires = stored_expiry(job_decoder.decode(fetched.payload))
        if await self.store.jobs.release(fetched.queue, fetched.jid, expires) == 2:
            await self.store.jobs.drop(fetched.queue, fetched.jid, now, self.kept(), wid)
        self.doorbell.ring(fetched.queue)


def stored_expiry(job: Job) -> float | None:
    """When a stored job expires (None: never, or its expiry no longer reads)."""
    try:
        return expiry_of(job, 0.0)
    except CommandError:
        return None
