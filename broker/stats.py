"""Counters behind INFO: job figures come from Redis (every broker's), the rest is this
process's."""

import os
import time
from typing import Any

import msgspec

from hopper_broker import __version__
from hopper_client.schema.jobs import format_time


class TaskStats(msgspec.Struct):
    """One periodic loop's figures, in the reference's INFO shape."""

    enqueued: int = 0
    cycles: int = 0
    wall_time_sec: float = 0.0
    reaped: int = 0


TASKS = (
    "Scheduled",
    "Retries",
    "Dead",
    "Busy",
    "Workers",
    "Finished",
    "History",
    "Cron",
    "Batches",
)
SETS = ("scheduled", "retries", "dead", "working")  # INFO's sets, in the reference's order


class Stats:
    """This process's connection and command counters and its loops' figures."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.connections = 0
        self.commands = 0
        self.tasks = {name: TaskStats() for name in TASKS}

    def record_task(self, name: str, moved: int, seconds: float) -> None:
        task = self.tasks[name]
        task.cycles += 1
        task.enqueued += moved
        task.reaped += moved
        task.wall_time_sec += seconds


def render_info(
    stats: Stats,
    sizes: dict[str, int],
    sets: dict[str, int],
    counters: dict[str, int],
    day: str,
    now: float,
    used_memory: int,
    workers: int,
    clock_offset: float,
) -> dict[str, Any]:
    """The INFO document, with the reference's four top-level keys."""
    t = stats.tasks
    tasks = {
        "Scheduled": _task(t["Scheduled"], sets["scheduled"]),
        "Retries": _task(t["Retries"], sets["retries"]),
        "Dead": _task(t["Dead"], sets["dead"]),
        "Busy": {"size": sets["working"], "reaped": t["Busy"].reaped},
        "Workers": {"size": workers, "reaped": t["Workers"].reaped},
        "Finished": {"purged": t["Finished"].reaped, "cycles": t["Finished"].cycles},
        "History": {"purged": t["History"].reaped, "cycles": t["History"].cycles},
        "Cron": {"enqueued": t["Cron"].enqueued, "cycles": t["Cron"].cycles},
        "Batches": {"moved": t["Batches"].reaped, "cycles": t["Batches"].cycles},
    }
    return {
        "now": format_time(now),
        "server_utc_time": time.strftime("%H:%M:%S UTC", time.gmtime(now)),
        "faktory": {
            "queues": sizes,
            "sets": {name: sets[name] for name in SETS},
            "tasks": tasks,
            "total_failures": counters["failures"],
            "total_processed": counters["processed"],
            "total_enqueued": sum(sizes.values()),
            "total_queues": len(sizes),
            "processed_today": counters[f"processed:{day}"],
            "failures_today": counters[f"failures:{day}"],
        },
        "server": {
            "description": "Hopper",
            "faktory_version": "1.10.0",
            "hopper_version": __version__,
            "pid": os.getpid(),
            "uptime": int(time.monotonic() - stats.started),
            "connections": stats.connections,
            "command_count": stats.commands,
            "used_memory_mb": round(used_memory / (1024 * 1024)),
            "clock_offset_ms": round(clock_offset * 1000, 3),
        },
    }


def render_hopper(
    draining: bool, expired: int, settings: dict[str, dict[str, Any]], workers: msgspec.Struct
) -> dict[str, Any]:
    """INFO's `hopper` key: the broker-wide drain, expired jobs, each queue's settings, the
    queues paused and draining now, and the connected workers with the jobs they hold."""
    return {
        "draining": draining,
        "expired": expired,
        "queues": settings,
        "paused": sorted(q for q, shown in settings.items() if "paused" in shown),
        "draining_queues": sorted(q for q, shown in settings.items() if shown.get("draining")),
        "workers": workers,
    }


def _task(task: TaskStats, size: int) -> dict[str, Any]:
    return {
        "enqueued": task.enqueued,
        "cycles": task.cycles,
        "size": size,
        "wall_time_sec": round(task.wall_time_sec, 6),
    }
