"""Prometheus metrics (`/metrics`): this process's figures, counted as they happen, and the
broker-wide figures read through the manager at each scrape (docs/dashboard.md says which are
which, and how to add up several brokers)."""

from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence

import msgspec
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from hopper_broker.commands import RUNS, TABLE
from hopper_broker.fetching import Fetched
from hopper_broker.manager import Manager
from hopper_broker.stats import Stats
from hopper_broker.web.figures import Figures, read_figures
from hopper_client.schema.errors import BrokerError

# Seconds: a FETCH that waits for a job takes up to fetch_timeout (2 s), the rest far less.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
VERBS = (*TABLE, *RUNS, "END", "EVENTS")  # anything else is counted as `other`
MAX_TRACKED = 100_000  # jobs handed out whose jobtype this process remembers until ACK/FAIL
MAX_SERIES = 1000  # (queue, jobtype) pairs counted apart by each counter; beyond, as `other`
LAG_INTERVAL = 0.25  # seconds between the event loop's lag measurements
UNKNOWN = ""  # queue or jobtype of a job this process did not hand out


class _Kind(msgspec.Struct):
    jobtype: str = ""


_kind = msgspec.json.Decoder(_Kind)


class Metrics(Collector):
    """The registry behind /metrics, and this process's figures in it: it is the command
    path's observer (commands.Observer), counting in plain numbers (one event loop: no lock)
    that become metric families only when scraped."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.stats: Stats = manager.stats
        self.shared = SharedCollector()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.registry.register(self.shared)
        self.lag = 0.0
        # verb -> [count per bucket (the last: beyond them)], and the seconds summed
        self._latency = {verb: [0] * (len(LATENCY_BUCKETS) + 1) for verb in (*VERBS, "other")}
        self._seconds = dict.fromkeys(self._latency, 0.0)
        self._kinds: OrderedDict[str, tuple[str, str]] = OrderedDict()  # jid -> its labels
        self._jobs: dict[tuple[bool, str, str], int] = {}  # (ACKed?, queue, jobtype) -> count
        self._series: Counter[bool] = Counter()  # keys of `_jobs` for ACKs, for FAILs

    # -- commands.Observer ------------------------------------------------------------------

    def command(self, verb: str, seconds: float, count: int) -> None:
        if verb not in self._seconds:
            verb = "other"
        self._latency[verb][bisect_left(LATENCY_BUCKETS, seconds)] += count
        self._seconds[verb] += seconds * count

    def fetched(self, found: Sequence[Fetched]) -> None:
        for job in found:
            try:
                jobtype = _kind.decode(job.payload).jobtype
            except msgspec.DecodeError:
                jobtype = UNKNOWN
            if len(self._kinds) >= MAX_TRACKED:  # forget the oldest (its ACK went elsewhere)
                self._kinds.popitem(last=False)
            self._kinds[job.jid] = (job.queue, jobtype)

    def finished(self, jobs: Sequence[tuple[str, str | None]], ok: bool) -> None:
        for jid, queue in jobs:
            key = (ok, *(self._kinds.pop(jid, None) or (queue or UNKNOWN, UNKNOWN)))
            if key not in self._jobs:
                if self._series[ok] >= MAX_SERIES - 1:  # room kept for `other`
                    key = (ok, "other", "other")
                if key not in self._jobs:
                    self._series[ok] += 1
            self._jobs[key] = self._jobs.get(key, 0) + 1

    # -- scrapes ------------------------------------------------------------------------------

    async def render(self) -> bytes:
        """The exposition text: the broker-wide figures read now, with this process's."""
        try:
            self.shared.figures = await read_figures(self.manager)
        except BrokerError:
            self.shared.figures = None
        return generate_latest(self.registry)

    async def watch_lag(self) -> None:
        """Measure, for ever, how late the event loop wakes a task that sleeps."""
        while True:
            started = trio.current_time()
            await trio.sleep(LAG_INTERVAL)
            self.lag = max(0.0, trio.current_time() - started - LAG_INTERVAL)

    def collect(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily(
            "hopper_command_duration_seconds",
            "Seconds from a command's start to its reply, by verb (this process)",
            labels=["verb"],
        )
        for verb, counts in self._latency.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            latency.add_metric([verb], buckets, self._seconds[verb])
        yield latency
        labels = ["queue", "jobtype"]
        processed = CounterMetricFamily(
            "hopper_jobs_processed", "Jobs ACKed through this process", labels=labels
        )
        failed = CounterMetricFamily(
            "hopper_jobs_failed", "Jobs FAILed through this process", labels=labels
        )
        for (ok, queue, jobtype), count in self._jobs.items():
            (processed if ok else failed).add_metric([queue, jobtype], count)
        yield from (processed, failed)
        yield GaugeMetricFamily(
            "hopper_event_loop_lag_seconds",
            "How late the event loop last woke a sleeping task (this process)",
            self.lag,
        )
        yield from _stats(self.stats)


def _bound(bound: float) -> str:
    """A bucket's upper bound as the exposition format writes it."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _stats(stats: Stats) -> Iterator[Metric]:
    """This process's counters of INFO (stats.py): connections, commands, its loops."""
    yield GaugeMetricFamily(
        "hopper_connections", "Client connections open to this process", stats.connections
    )
    yield CounterMetricFamily(
        "hopper_commands", "Commands received by this process", stats.commands
    )
    cycles = CounterMetricFamily(
        "hopper_loop_cycles", "Passes of this process's periodic loops", labels=["loop"]
    )
    seconds = CounterMetricFamily(
        "hopper_loop_seconds", "Seconds spent in this process's periodic loops", labels=["loop"]
    )
    moved = CounterMetricFamily(
        "hopper_loop_moved", "Jobs moved by this process's periodic loops", labels=["loop"]
    )
    for name, task in stats.tasks.items():
        cycles.add_metric([name], task.cycles)
        seconds.add_metric([name], task.wall_time_sec)
        moved.add_metric([name], task.enqueued)
    yield from (cycles, seconds, moved)


class SharedCollector(Collector):
    """The broker-wide figures (the same from every broker sharing the Redis) of the last
    scrape; only `hopper_redis_up` when Redis did not answer."""

    def __init__(self) -> None:
        self.figures: Figures | None = None

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families vary with Redis's health: nothing to check up front

    def collect(self) -> Iterator[Metric]:
        f = self.figures
        yield GaugeMetricFamily(
            "hopper_redis_up", "1 when Redis answered this scrape, else 0", int(f is not None)
        )
        if f is None:
            return
        size = GaugeMetricFamily("hopper_queue_size", "Jobs waiting in a queue", labels=["queue"])
        latency = GaugeMetricFamily(
            "hopper_queue_latency_seconds",
            "Seconds the oldest waiting job has waited",
            labels=["queue"],
        )
        paused = GaugeMetricFamily(
            "hopper_queue_paused", "1 when a queue is paused", labels=["queue"]
        )
        for queue in f.queues:
            size.add_metric([queue.name], queue.size)
            latency.add_metric([queue.name], queue.latency)
            paused.add_metric([queue.name], int(queue.paused))
        sets = GaugeMetricFamily("hopper_set_size", "Jobs in a set (all queues)", labels=["set"])
        for name, count in f.sets.items():
            sets.add_metric([name], count)
        yield from (size, latency, paused, sets)
        yield GaugeMetricFamily("hopper_workers", "Worker processes registered", f.workers)
        yield GaugeMetricFamily(
            "hopper_redis_used_memory_bytes", "Redis's used_memory", f.used_memory_mb * 1024**2
        )
        yield CounterMetricFamily(
            "hopper_broker_processed", "Jobs processed by every broker (INFO)", f.processed
        )
        yield CounterMetricFamily(
            "hopper_broker_failures", "Jobs failed on every broker (INFO)", f.failures
        )
        yield GaugeMetricFamily("hopper_draining", "1 while the broker drains", int(f.draining))
