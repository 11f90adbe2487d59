"""The cron room (the manager owns it): push each due tick of the configured entries once,
whichever brokers run, and list the entries with their next and last ticks (CRON LIST).

Exactly once: a tick is pushed with a claim (entry id, tick); the push script stores the job
only if the claims hash holds an earlier tick for the entry, and records this one in the same
step. Every broker pushes an entry's ticks in order, starting after the claim it read, so a
tick is never pushed twice and never jumped over while an earlier one is owed.

Missed ticks: a tick due within the last LATE seconds is pushed still (a pass that ran late,
a broker restarted at once). Ticks older than that which nobody pushed (every broker was down)
get one catch-up job, for the most recent of them; the others are skipped. An entry with no
claim yet starts with its first tick after this broker first saw it.
"""

import logging
import math
import secrets
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from hopper_broker.config import Settings
from hopper_broker.cron import CronEntry, Periodic, compile_all
from hopper_broker.errors import Unreplicated
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import BrokerError
from hopper_client.schema.jobs import Job, format_time

log = logging.getLogger(__name__)

LATE = 5.0  # seconds a tick may be overdue and still be pushed as itself, not caught up
MAX_TICKS = 10  # ticks one entry pushes in one pass (LATE holds at most 6 of one per second)

Push = Callable[[Sequence[Job], float, tuple[str, float]], Awaitable[list[BrokerError | None]]]


class CronListing(msgspec.Struct, frozen=True):
    """One entry as CRON LIST shows it; times RFC3339 (None: never)."""

    id: str
    schedule: str
    timezone: str
    type: str
    queue: str
    next_at: str | None
    last_at: str | None


class Crontab:
    """The configured periodic jobs of this broker process."""

    def __init__(self, store: Store, settings: Settings, push: Push) -> None:
        self.store = store
        self.settings = settings
        self.push = push
        self._source: tuple[CronEntry, ...] = ()
        self._entries: list[Periodic] = []
        self._since: dict[str, float] = {}  # entry id -> when this broker first had it
        self._started = False  # entries were read once (at start): later ones come by reload
        # entry id -> the last tick this broker pushed (for an entry a reload added, when it
        # was added: a tick missed while it was not in force is not owed)
        self._handled: dict[str, float] = {}
        self._next: dict[str, float] = {}  # entry id -> its next tick (-inf: read its claim)

    def entries(self, now: float) -> list[Periodic]:
        """The entries in force (recompiled after a reload); one seen for the first time
        starts its history at `now`, and one a reload added (again) its next tick after."""
        cron = self.settings().cron
        if cron is not self._source:
            self._entries = compile_all(cron)
            ids = {p.id for p in self._entries}
            for table in (self._since, self._handled, self._next):
                for gone in set(table) - ids:
                    del table[gone]
            for p in self._entries:
                if self._started and p.id not in self._since:
                    self._handled[p.id] = now
                self._since.setdefault(p.id, now)
                self._next.setdefault(p.id, -math.inf)
            self._source = cron
        self._started = True
        return self._entries

    async def next_tick(self) -> float | None:
        """When the earliest entry next comes due (None: no entries)."""
        return min((self._next[p.id] for p in self._entries), default=None)

    async def enqueue_due(self, now: float) -> int:
        """Push every entry's due ticks; returns how many jobs this broker pushed."""
        due = [p for p in self.entries(now) if self._next[p.id] <= now]
        if not due:
            return 0
        claims = await self.store.cron_claims([(p.id, p.entry.job.queue) for p in due])
        pushed = 0
        for periodic, claim in zip(due, claims, strict=True):
            pushed += await self._run(periodic, claim, now)
        return pushed

    async def _run(self, p: Periodic, claim: float | None, now: float) -> int:
        cursor = max(self._since[p.id] if claim is None else claim, self._handled.get(p.id, 0.0))
        tick = p.schedule.next_after(cursor, p.zone)
        if tick is not None and tick < now - LATE:
            log.info("cron %s: ticks missed since %s, one caught up", p.id, format_time(tick))
            tick = p.schedule.latest_at_or_before(now - LATE, p.zone)
        pushed = 0
        for _ in range(MAX_TICKS):
            if tick is None or tick > now:
                break
            job = p.job(tick, now, secrets.token_hex(4))
            outcome = (await self.push([job], now, (p.id, tick)))[0]
            self._handled[p.id] = tick
            tick = p.schedule.next_after(tick, p.zone)
            if outcome is None:
                pushed += 1
            elif isinstance(outcome, Unreplicated):
                pushed += 1
                log.warning("cron %s: job %s %s", p.id, job.jid, outcome.message)
            elif outcome.code == "CLAIMED":  # another broker is ahead: read its claim next
                break
            elif outcome.code == "NOTUNIQUE":
                log.debug("cron %s: tick skipped, job %s not unique", p.id, job.jid)
            else:
                refusal = outcome.render()
                log.warning("cron %s: tick skipped, job %s refused: %s", p.id, job.jid, refusal)
        self._next[p.id] = math.inf if tick is None else tick
        return pushed

    async def listing(self, now: float) -> list[CronListing]:
        """Every entry with its next tick after `now` and the last one pushed (CRON LIST)."""
        entries = self.entries(now)
        claims = await self.store.cron_claims([(p.id, p.entry.job.queue) for p in entries])
        return [
            CronListing(
                p.id,
                p.entry.schedule,
                p.entry.timezone,
                p.entry.job.type,
                p.entry.job.queue,
                _time(p.schedule.next_after(now, p.zone)),
                _time(claim),
            )
            for p, claim in zip(entries, claims, strict=True)
        ]


def _time(t: float | None) -> str | None:
    return None if t is None else format_time(t)
