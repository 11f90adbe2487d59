"""arq: WorkerSettings for `arq bench.peers.arq.WorkerSettings`, and a pool to enqueue with.

BENCH_ARQ_POLL_DELAY sets `poll_delay` (arq's default: 0.5 s).
"""

import os
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.probe import record

REDIS = RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://localhost"))
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}


async def noop(ctx: dict[str, Any], sent: float) -> None:
    record(sent)


class WorkerSettings:
    functions = (noop,)
    redis_settings = REDIS
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    poll_delay = float(os.environ.get("BENCH_ARQ_POLL_DELAY", "0.5"))


class Pusher:
    def __init__(self, pool: ArqRedis) -> None:
        self.pool = pool

    async def push(self, sent: float) -> None:
        await self.pool.enqueue_job("noop", sent)

    async def push_batch(self, sent: float, count: int) -> None:
        raise NotImplementedError("arq has no bulk enqueue")


async def apusher() -> Pusher:
    return Pusher(await create_pool(REDIS))
