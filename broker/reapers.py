"""Periodic loops: each one calls the manager with `now`, records its figures and sleeps.

Every loop reads its interval from the settings in force at each turn, so a reload reaches it,
and survives errors (Redis restarting, say, or a bug): it logs and tries again next period.
Several broker processes may run these loops on one Redis; the scripts move each job once.
"""

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from broker.config import Config
from broker.errors import BrokerError
from broker.manager import Manager

log = logging.getLogger(__name__)

Step = Callable[[float], Awaitable[int]]
Interval = Callable[[Config], float]


async def every(interval: Interval, name: str, step: Step, manager: Manager) -> None:
    """Run `step(now)` every `interval(settings)` seconds, for ever."""
    while True:
        started = time.perf_counter()
        try:
            moved = await step(manager.clock())
        except BrokerError as exc:
            log.warning("%s loop: %s", name, exc)
        except Exception:  # a bug must not stop the broker: log it and try again next period
            log.exception("%s loop failed", name)
        else:
            manager.stats.record_task(name, moved, time.perf_counter() - started)
        with trio.move_on_after(interval(manager.settings())):
            await manager.settings.reloaded()  # a new interval takes effect at once


async def run_reapers(manager: Manager, close_worker: Callable[[str], None]) -> None:
    """All the periodic loops of one broker process."""

    async def scheduled(now: float) -> int:
        return await manager.enqueue_due("scheduled", now)

    async def retries(now: float) -> int:
        return await manager.enqueue_due("retries", now)

    async def workers(now: float) -> int:
        gone = await manager.workers.reap(now)
        for wid in gone:
            close_worker(wid)
        return len(gone)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(every, lambda c: c.scheduler_interval, "Scheduled", scheduled, manager)
        nursery.start_soon(every, lambda c: c.scheduler_interval, "Retries", retries, manager)
        nursery.start_soon(
            every, lambda c: c.reaper_interval, "Busy", manager.reap_expired, manager
        )
        nursery.start_soon(
            every, lambda c: c.dead_purge_interval, "Dead", manager.purge_dead, manager
        )
        nursery.start_soon(every, lambda c: c.worker_reaper_interval, "Workers", workers, manager)
