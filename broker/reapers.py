"""Periodic loops: each one calls the manager with `now`, records its figures and sleeps.

The cron loop pushes the ticks of the configured periodic jobs that came due, then sleeps until
the earliest next tick (at most CRON_INTERVAL).

The scheduled and retry loops wake at the earliest due time the due index knows when it comes
before their next period: a job scheduled for later is enqueued when it is due, not up to one
period after (one pushed for sooner than the loop's next run waits at most one period).

Every loop reads its interval from the settings in force at each turn, so a reload reaches it,
and survives errors (Redis restarting, say, or a bug): it logs and tries again next period.
Several broker processes may run these loops on one Redis; the scripts move each job once.
"""

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from hopper_broker.config import Config
from hopper_broker.manager import Manager
from hopper_client.schema.errors import BrokerError

log = logging.getLogger(__name__)

Step = Callable[[float], Awaitable[int]]
Interval = Callable[[Config], float]
Soonest = Callable[[], Awaitable[float | None]]
MIN_PAUSE = 0.005  # seconds between two runs of a loop that still has due work
CRON_INTERVAL = 1.0  # longest sleep of the cron loop (it wakes at the next tick when sooner)


async def every(
    interval: Interval, name: str, step: Step, manager: Manager, soonest: Soonest | None = None
) -> None:
    """Run `step(now)` every `interval(settings)` seconds, for ever; with `soonest` (when the
    next piece of work comes due), sooner when that comes before then."""
    while True:
        started = time.perf_counter()
        earliest = None
        try:
            moved = await step(manager.clock())
            if soonest is not None:
                earliest = await soonest()
        except BrokerError as exc:
            log.warning("%s loop: %s", name, exc)
        except Exception:  # a bug must not stop the broker: log it and try again next period
            log.exception("%s loop failed", name)
        else:
            manager.stats.record_task(name, moved, time.perf_counter() - started)
        pause = interval(manager.settings())  # read after the step: a reload meanwhile counts
        if earliest is not None:
            pause = min(pause, max(earliest - manager.clock(), MIN_PAUSE))
        with trio.move_on_after(pause):
            await manager.settings.reloaded()  # a new interval takes effect at once


async def run_reapers(manager: Manager, close_worker: Callable[[str], None]) -> None:
    """All the periodic loops of one broker process."""

    async def scheduled(now: float) -> int:
        return await manager.sweeps.enqueue_due("scheduled", now)

    async def retries(now: float) -> int:
        return await manager.sweeps.enqueue_due("retries", now)

    async def workers(now: float) -> int:
        gone = await manager.workers.reap(now)
        for wid in gone:
            close_worker(wid)
        return len(gone) + await manager.sweeps.reap_lost(now)

    async def next_scheduled() -> float | None:
        return await manager.sweeps.next_due("scheduled")

    async def next_retry() -> float | None:
        return await manager.sweeps.next_due("retries")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            every, lambda c: c.scheduler_interval, "Scheduled", scheduled, manager, next_scheduled
        )
        nursery.start_soon(
            every, lambda c: c.scheduler_interval, "Retries", retries, manager, next_retry
        )
        nursery.start_soon(
            every,
            lambda c: CRON_INTERVAL,
            "Cron",
            manager.cron.enqueue_due,
            manager,
            manager.cron.next_tick,
        )
        nursery.start_soon(
            every, lambda c: c.reaper_interval, "Busy", manager.sweeps.reap_expired, manager
        )
        nursery.start_soon(
            every, lambda c: c.dead_purge_interval, "Dead", manager.sweeps.purge_dead, manager
        )
        nursery.start_soon(
            every,
            lambda c: c.dead_purge_interval,
            "Finished",
            manager.sweeps.purge_finished,
            manager,
        )
        nursery.start_soon(
            every, lambda c: c.history_interval, "History", manager.history.retain, manager
        )
        nursery.start_soon(every, lambda c: c.worker_reaper_interval, "Workers", workers, manager)
        nursery.start_soon(
            every, lambda c: c.scheduler_interval, "Batches", manager.follow_ups, manager
        )
