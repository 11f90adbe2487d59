"""The broker-wide figures the dashboard and /metrics show, read through the manager (INFO's
reading, QUEUE LATENCY's) in one place, and their recent history for the overview's chart."""

from collections import deque

import msgspec
import trio

from hopper_broker.manager import Manager
from hopper_client.schema.errors import BrokerError

HISTORY_INTERVAL = 5.0  # seconds between samples of the processed and failed totals
HISTORY_SAMPLES = 120  # samples kept: ten minutes at HISTORY_INTERVAL


class QueueFigures(msgspec.Struct):
    """One queue as the dashboard shows it."""

    name: str
    size: int
    latency: float
    paused: bool
    settings: dict[str, object]


class Figures(msgspec.Struct):
    """What every broker sharing the Redis sees alike (INFO's figures)."""

    queues: list[QueueFigures]
    sets: dict[str, int]  # scheduled, retries, dead, working
    processed: int
    failures: int
    processed_today: int
    failures_today: int
    workers: int
    used_memory_mb: int
    draining: bool
    expired: int


async def read_figures(manager: Manager) -> Figures:
    """The figures now; raises BrokerError when Redis does not answer."""
    now = manager.clock()
    info = await manager.admin.info(now)
    faktory, hopper = info["faktory"], info["hopper"]
    sizes: dict[str, int] = faktory["queues"]
    latencies = await manager.admin.latency(sorted(sizes), now) if sizes else {}
    settings: dict[str, dict[str, object]] = hopper["queues"]
    queues = [
        QueueFigures(
            name,
            size,
            float(latencies.get(name, 0)),
            "paused" in settings.get(name, {}),
            settings.get(name, {}),
        )
        for name, size in sorted(sizes.items())
    ]
    return Figures(
        queues=queues,
        sets=faktory["sets"],
        processed=faktory["total_processed"],
        failures=faktory["total_failures"],
        processed_today=faktory["processed_today"],
        failures_today=faktory["failures_today"],
        workers=faktory["tasks"]["Workers"]["size"],
        used_memory_mb=info["server"]["used_memory_mb"],
        draining=hopper["draining"],
        expired=hopper["expired"],
    )


class Sample(msgspec.Struct, frozen=True):
    """Jobs processed and failed (broker-wide) during the interval ending at `at`."""

    at: float
    processed: int
    failed: int


class History:
    """The processed and failed totals sampled every HISTORY_INTERVAL seconds, as deltas."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.samples: deque[Sample] = deque(maxlen=HISTORY_SAMPLES)
        self._last: tuple[int, int] | None = None

    async def run(self) -> None:
        while True:
            await self.sample()
            await trio.sleep(HISTORY_INTERVAL)

    async def sample(self) -> None:
        """Note the totals now; the first sample after a gap only sets the baseline."""
        try:
            faktory = (await self.manager.admin.info(self.manager.clock()))["faktory"]
        except BrokerError:
            self._last = None  # Redis away: a gap, not a spike, when it returns
            return
        totals = (faktory["total_processed"], faktory["total_failures"])
        if self._last is not None:
            processed, failed = (
                max(0, now - then) for now, then in zip(totals, self._last, strict=True)
            )
            self.samples.append(Sample(self.manager.clock(), processed, failed))
        self._last = totals
