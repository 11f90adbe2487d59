"""One clock for every broker process: Redis's.

Every score in Redis (reservation expiries, schedules, retries, heartbeats) is a time, so
brokers sharing a Redis must agree on "now": a broker whose own clock ran ahead would expire
the others' reservations early. The clock reads Redis TIME when the broker starts and every
SYNC_INTERVAL seconds after, and runs on the monotonic clock in between, so a jump of the
machine's wall clock moves nothing either.
"""

import logging
import time
from typing import Protocol

import trio

from hopper_broker.store.redis import Store
from hopper_client.schema.errors import BrokerError

log = logging.getLogger(__name__)

SYNC_INTERVAL = 10.0  # seconds between readings of Redis TIME
SKEW_WARNING = 1.0  # seconds: a machine clock this far from Redis's is worth a log line


class Clock(Protocol):
    """What the broker asks of a clock: "now" in unix seconds, and how far this machine's own
    clock is from it (reported in INFO)."""

    offset: float

    def __call__(self) -> float: ...


class RedisClock:
    """Unix seconds as Redis tells them; call it for "now"."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._base = time.time()
        self._since = time.monotonic()
        self.offset = 0.0  # Redis's time minus this machine's, at the last reading

    def __call__(self) -> float:
        return self._base + (time.monotonic() - self._since)

    async def sync(self) -> None:
        """Read Redis TIME (half the round trip is taken as the moment it was read)."""
        before = time.monotonic()
        redis_now = await self.store.time()
        after = time.monotonic()
        self._base, self._since = redis_now, (before + after) / 2
        offset = redis_now - time.time()
        if abs(offset) >= SKEW_WARNING and abs(self.offset) < SKEW_WARNING:
            log.warning("this machine's clock is %+.3fs from Redis's; Hopper uses Redis's", -offset)
        self.offset = offset

    async def run(self) -> None:
        """Keep in step with Redis for ever (a failed reading is retried at the next one)."""
        while True:
            await trio.sleep(SYNC_INTERVAL)
            try:
                await self.sync()
            except BrokerError as exc:  # Redis away: keep running on the monotonic clock
                log.warning("could not read the time from Redis: %s", exc)
