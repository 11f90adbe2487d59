"""The store: the only way into Redis. Job moves, queue-wide operations, jobs by jid and the
worker registry, each in its own module, over one auto-pipelining connection."""

from collections.abc import Iterable

from hopper_broker.store.base import Redis, text
from hopper_broker.store.batches import BatchStore
from hopper_broker.store.connection import Connection
from hopper_broker.store.history import HistoryStore
from hopper_broker.store.jobs import JobStore
from hopper_broker.store.keys import CRON, JIDS, SCHEMA_KEY, SPLIT_MARK
from hopper_broker.store.listing import ListingStore
from hopper_broker.store.pushes import PushStore
from hopper_broker.store.queues import QueueStore
from hopper_broker.store.sets import SetStore
from hopper_broker.store.tracking import TrackingStore
from hopper_broker.store.workers import WorkerStore
from hopper_broker.store.workflows import WorkflowStore


class Store:
    """Typed Redis operations for the manager."""

    def __init__(self, pipeline: Connection, split: bool = False) -> None:
        self.redis = Redis(pipeline, split)
        self.workflows = WorkflowStore(self.redis)
        self.jobs = JobStore(self.redis)
        self.pushes = PushStore(self.redis, self.jobs, self.workflows)
        self.sets = SetStore(self.redis, self.jobs)
        self.queues = QueueStore(self.redis, self.jobs)
        self.tracking = TrackingStore(self.redis, self.jobs)
        self.workers = WorkerStore(self.redis)
        self.batches = BatchStore(self.redis)
        self.listing = ListingStore(self.redis, self.jobs)
        self.history = HistoryStore(self.redis, self.jobs)

    async def time(self) -> float:
        """Redis's clock, in unix seconds."""
        seconds, micros = await self.redis.execute("TIME")
        return int(seconds) + int(micros) / 1_000_000

    def connection(self) -> int:
        """Which connection to Redis this is (a number that changes when it reconnects)."""
        return self.redis.pipeline.connections

    async def replicated(
        self, replicas: int, timeout: float, since: int, queues: Iterable[str]
    ) -> int:
        """How many replicas acknowledged every write sent so far to the nodes of `queues`
        and of the global keys, waiting up to `timeout` seconds for `replicas` of them
        (WAIT); 0 when the connection changed after `since` (connection(): a cluster's slot
        map reloaded counts): the writes of an earlier connection cannot be vouched for."""
        written = [JIDS, *(self.jobs.keys(queue).jobs for queue in queues)]
        timeout_ms = max(int(timeout * 1000), 1)
        acked = await self.redis.pipeline.wait_replicas(replicas, timeout_ms, written)
        return acked if self.connection() == since else 0

    async def redis_version(self) -> tuple[int, ...]:
        """The Redis server's version, as numbers."""
        info = text(await self.redis.execute("INFO", "server"))
        for line in info.splitlines():
            if line.startswith("redis_version:"):
                return tuple(int(part) for part in line.split(":", 1)[1].strip().split("."))
        return ()

    async def written_split(self) -> bool:
        """Whether the store was written in split mode (keys.SPLIT_MARK)."""
        return bool(await self.redis.execute("EXISTS", SPLIT_MARK))

    async def schema(self) -> int | None:
        """The storage schema number written in Redis, if any."""
        found = await self.redis.execute("GET", SCHEMA_KEY)
        return None if found is None else int(text(found))

    async def cron_claims(self, entries: list[tuple[str, str]]) -> list[float | None]:
        """The last tick each cron entry (id, its jobs' queue) enqueued (None: never), as the
        push script records it: in one hash, or in split mode in the queue's own."""
        if not entries:
            return []
        if self.redis.split:
            commands = [("HGET", self.jobs.keys(queue).cron, id_) for id_, queue in entries]
            found = await self.redis.execute_many(commands)
        else:
            found = await self.redis.execute("HMGET", CRON, *(id_ for id_, _ in entries))
        return [None if tick is None else float(text(tick)) for tick in found]
