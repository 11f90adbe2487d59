"""saq: a Redis queue and its worker settings; `saq bench.peers.saq.settings` runs it.

`RedisQueue.from_url` is what `Queue.from_url` calls for redis:// URLs; it is used directly
because `Queue.from_url` does not accept unix:// ones.
"""

import os
from typing import Any

from saq.queue.redis import RedisQueue

from bench.probe import record

URL = os.environ.get("BENCH_REDIS_URL", "redis://localhost")


async def noop(ctx: dict[str, Any], *, sent: float) -> None:
    record(sent)


settings = {
    "queue": RedisQueue.from_url(URL),
    "functions": [noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
}


class Pusher:
    def __init__(self) -> None:
        self.queue = RedisQueue.from_url(URL)

    async def push(self, sent: float) -> None:
        await self.queue.enqueue("noop", sent=sent)

    async def push_batch(self, sent: float, count: int) -> None:
        raise NotImplementedError("saq has no bulk enqueue")


async def apusher() -> Pusher:
    return Pusher()
