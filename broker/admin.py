"""Operator commands over queues: QUEUE PAUSE/RESUME/REMOVE/LATENCY, FLUSH and INFO.

What REMOVE and FLUSH take away (protocol.md says the same):
- QUEUE REMOVE deletes a queue's waiting jobs and its settings and stops listing it. Its
  scheduled, retrying, reserved and dead jobs stay and keep running (the reference keeps those
  sets global); the queue is listed again when one of them is enqueued.
- FLUSH deletes every job wherever it is (reservations included), every queue and the
  counters; connected workers stay registered.
Both work in batches, each batch one script that deletes whole jobs (record, place and jid index
entry together), and both have a bounded amount of work: jobs pushed while they run may stay.
"""

from collections.abc import Callable, Sequence
from typing import Any

from hopper_broker.clock import Clock
from hopper_broker.doorbell import Doorbell
from hopper_broker.listing import Listing
from hopper_broker.policy import QueueRules, queue_setting
from hopper_broker.stats import Stats, render_hopper, render_info
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import (
    QUEUE_NAME,
    check_queue_name,
    format_day,
    job_decoder,
    parse_time,
)

ADMIN_BATCH = 1000  # jobs deleted per script call by QUEUE REMOVE and FLUSH


class Admin:
    """Queue-wide operator commands."""

    def __init__(
        self,
        store: Store,
        doorbell: Doorbell,
        stats: Stats,
        clock: Clock,
        listing: Listing,
        limits_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.limits_changed = limits_changed  # push limits remembered by this process are stale
        self.doorbell = doorbell
        self.stats = stats
        self.clock = clock
        self.listing = listing
        self.configured: list[str] = []  # the queues the configuration file has settings for
        self._rules: dict[str, QueueRules] = {}  # those settings, as last applied

    async def _select(self, names: Sequence[str]) -> list[str]:
        """The listed queues among `names` (`*`: every listed queue); others are ignored."""
        listed = await self.store.queues.listed()
        if "*" in names:
            return listed
        wanted = set(names)
        return [queue for queue in listed if queue in wanted]

    async def pause(self, names: Sequence[str], paused: bool, seconds: float | None = None) -> None:
        """QUEUE PAUSE (for `seconds`, then it resumes by itself) or QUEUE RESUME."""
        resume_at = None if seconds is None else self.clock() + seconds
        for queue in await self._select(names):
            await self.store.queues.pause(queue, paused, resume_at)
            if not paused:
                self.doorbell.ring(queue, 1_000_000)

    async def configure(self, names: Sequence[str], words: Sequence[str]) -> None:
        """QUEUE SET `<setting>=<value>` ... on the named queues (listed or not; `*`: every
        listed queue); see queue_setting()."""
        settings = dict(queue_setting(word) for word in words)
        for name in names:
            if name != "*":
                check_queue_name(name)
        queues = await self._select(names) if "*" in names else list(names)
        for queue in queues:
            await self.store.queues.configure(queue, settings)
        self.limits_changed()

    async def apply(self, rules: dict[str, QueueRules]) -> None:
        """The queue settings of the configuration file (`[queues.<name>]`), written over
        those set at runtime (at start, at each reload, after FLUSH and QUEUE REMOVE); a
        setting the file no longer gives is cleared."""
        previous, self._rules = self._rules, rules
        self.configured = sorted(rules)
        for queue in sorted({*rules, *previous}):
            given = rules.get(queue, QueueRules())
            settings: dict[str, str | None] = dict.fromkeys(previous.get(queue, given).names())
            settings.update(queue_setting(word) for word in given.words())
            if settings:
                await self.store.queues.configure(queue, settings)
        self.limits_changed()

    async def drain(self, on: bool) -> None:
        """DRAIN ON|OFF: every queue refuses pushes (FETCH, ACK and FAIL go on), or not."""
        await self.store.queues.drain(on)
        self.limits_changed()

    async def remove(self, names: Sequence[str]) -> int:
        """QUEUE REMOVE; returns how many waiting jobs were deleted."""
        deleted = 0
        for queue in await self._select(names):
            count, left = await self.store.queues.remove_waiting(queue, ADMIN_BATCH)
            deleted += count
            for _ in range(left // ADMIN_BATCH + 1):  # what waited when REMOVE began
                if not left:
                    break
                count, left = await self.store.queues.remove_waiting(queue, ADMIN_BATCH)
                deleted += count
        await self.apply(self._rules)  # the file's queue settings outlive a QUEUE REMOVE
        return deleted

    async def flush(self) -> None:
        """FLUSH: every job, queue, batch, archived job and counter; workers stay registered."""
        for queue in await self.store.queues.holding():
            left = await self.store.queues.flush(queue, ADMIN_BATCH)
            for _ in range(left // ADMIN_BATCH + 1):  # what the queue held when FLUSH began
                if not left:
                    break
                left = await self.store.queues.flush(queue, ADMIN_BATCH)
        await self.store.queues.forget_counters()
        await self.store.batches.flush()
        await self.store.history.clear(ADMIN_BATCH)
        await self.apply(self._rules)  # the file's queue settings outlive a FLUSH

    async def latency(self, names: Sequence[str], now: float) -> dict[str, float | int]:
        """Seconds the oldest job of each queue has waited (0 for empty or unknown queues)."""
        if "*" in names:
            raise CommandError("QUEUE LATENCY does not support wildcards")
        result: dict[str, float | int] = {}
        for name in names:
            payloads = await self.store.queues.oldest(name) if QUEUE_NAME.fullmatch(name) else []
            result[name] = max((_waited(payload, now) for payload in payloads), default=0)
        return result

    async def settings_in_force(self, now: float) -> dict[str, dict[str, Any]]:
        """Each queue's settings (QUEUE SET, the file's, a pause): those that have some."""
        queues = await self.store.queues.listed()
        settings = await self.store.queues.settings(sorted({*queues, *self.configured}))
        for shown in settings.values():  # a timed pause that is over (ends at the next FETCH)
            if float(shown.get("resume_at", "inf")) <= now:
                del shown["paused"], shown["resume_at"]
        return {queue: shown for queue, shown in settings.items() if shown}

    async def info(self, now: float) -> dict[str, Any]:
        queues = await self.store.queues.listed()
        settings = await self.settings_in_force(now)
        draining = await self.store.queues.draining()
        expired = await self.store.queues.expired()
        sizes, sets = await self.store.queues.counts(queues)
        day = format_day(now)
        counters = await self.store.queues.counters(day)
        memory = await self.store.queues.used_memory()
        workers = await self.store.workers.count()
        info = render_info(
            self.stats, sizes, sets, counters, day, now, memory, workers, self.clock.offset
        )
        info["hopper"] = render_hopper(draining, expired, settings, await self.listing.workers())
        return info


def _waited(payload: bytes, now: float) -> float | int:
    """Seconds since the job was enqueued; 0 (as the reference writes it) when it has no
    readable `enqueued_at`."""
    enqueued_at = job_decoder.decode(payload).enqueued_at
    try:
        return max(0.0, now - parse_time(enqueued_at))
    except ValueError:
        return 0
