"""Periodic jobs as configured: `[[cron]]` entries in Faktory Enterprise's format, their
schedules (cron expressions, with an optional seconds field) and when each fires.

Pure: parsing, checking, and next / latest fire times in an entry's time zone. A local time
that a DST change skips never fires; one that repeats fires once, at its first occurrence.
"""

import hashlib
import math
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from hopper_broker.policy import due_at, settle_rules
from hopper_client.schema.errors import BrokerError
from hopper_client.schema.jobs import Job, check_queue_name, validate_new

# (name, lowest, highest) of the six fields, seconds first; 5-field schedules omit seconds.
FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),  # 0 and 7 are Sunday
)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
NAMES = {
    "month": {n: i + 1 for i, n in enumerate(MONTHS)},
    "day of week": {n: i for i, n in enumerate(WEEKDAYS)},
}
# Days a search walks at most: Feb 29 on a given weekday recurs within 40 years.
HORIZON_DAYS = 50 * 366
ENTRY_ID_CHARS = 12  # hex characters of an entry's id


class Schedule(msgspec.Struct, frozen=True):
    """A parsed cron expression: the values each field allows, ascending, and whether the day
    fields began with `*` (Vixie cron's rule: both restricted, a day matches either)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 Sunday .. 6 Saturday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> "Schedule":
        """Parse 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first);
        raises ValueError saying which field is wrong and why."""
        words = text.split()
        if len(words) == 5:
            words = ["0", *words]
        elif len(words) != 6:
            raise ValueError(
                "needs 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds "
                f"first), got {len(words)}"
            )
        seconds, minutes, hours, days, months, weekdays = (
            _field(word, *spec) for word, spec in zip(words, FIELDS, strict=True)
        )
        schedule = cls(
            seconds,
            minutes,
            hours,
            days,
            months,
            tuple(sorted({d % 7 for d in weekdays})),
            any_day=words[3].startswith("*"),
            any_weekday=words[5].startswith("*"),
        )
        if schedule.next_after(0.0, ZoneInfo("UTC")) is None:
            raise ValueError(f"{text.strip()!r} never fires (no such day)")
        return schedule

    def next_after(self, t: float, zone: ZoneInfo) -> float | None:
        """The first fire time after unix time `t` (None: none within the horizon)."""
        start = datetime.fromtimestamp(math.floor(t), zone).replace(tzinfo=None)
        for naive in self._walk(start + timedelta(seconds=1), True):
            at = _instant(naive, zone)
            if at is not None and at > t:
                return at
        return None

    def latest_at_or_before(self, t: float, zone: ZoneInfo) -> float | None:
        """The last fire time at or before unix time `t` (None: none within the horizon)."""
        local = datetime.fromtimestamp(math.floor(t), zone)
        start = local.replace(tzinfo=None)
        if local.fold:  # the second pass of a repeated hour: its times fired on the first
            start += local.replace(fold=0).utcoffset() - local.utcoffset()  # type: ignore[operator]
        for naive in self._walk(start, False):
            at = _instant(naive, zone)
            if at is not None and at <= t:
                return at
        return None

    def _day_matches(self, day: date) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        return dom and dow if self.any_day or self.any_weekday else dom or dow

    def _walk(self, start: datetime, forward: bool) -> Iterator[datetime]:
        """Local wall times the fields allow, from `start` (included) on, forward or back."""
        day = start.date()
        try:
            for _ in range(HORIZON_DAYS):
                if day.month not in self.months:
                    # on to the next month's first day, or back to the previous one's last
                    first = day.replace(day=1)
                    if forward:
                        day = (first + timedelta(days=32)).replace(day=1)
                    else:
                        day = first - timedelta(days=1)
                    continue
                if self._day_matches(day):
                    floor = start if day == start.date() else None
                    for h, m, s in self._times(floor, forward):
                        yield datetime(day.year, day.month, day.day, h, m, s)
                day += timedelta(days=1 if forward else -1)
        except OverflowError:  # past year 9999 or before year 1
            return

    def _times(self, floor: datetime | None, forward: bool) -> Iterator[tuple[int, int, int]]:
        """(hour, minute, second) of one day in order, from `floor`'s time on when given."""

        def order(values: tuple[int, ...]) -> Iterator[int]:
            return iter(values) if forward else reversed(values)

        def passed(value: int, bound: int) -> bool:
            return value < bound if forward else value > bound

        for h in order(self.hours):
            if floor is not None and passed(h, floor.hour):
                continue
            at_hour = floor is not None and h == floor.hour
            for m in order(self.minutes):
                if at_hour and floor is not None and passed(m, floor.minute):
                    continue
                at_minute = at_hour and floor is not None and m == floor.minute
                for s in order(self.seconds):
                    if at_minute and floor is not None and passed(s, floor.second):
                        continue
                    yield h, m, s


def _field(word: str, name: str, low: int, high: int) -> tuple[int, ...]:
    """The values one field allows: lists of `*`, `n`, `a-b`, each with an optional `/step`."""
    found: set[int] = set()
    for item in word.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} step {step_text!r} must be a whole number above 0")
            step = int(step_text)
        if base == "*":
            first, last = low, high
        else:
            a, dash, b = base.partition("-")
            first = _value(a, name, low, high)
            last = _value(b, name, low, high) if dash else high if slash else first
            if first > last:
                raise ValueError(f"{name} range {base!r} goes backwards")
        found.update(range(first, last + 1, step))
    return tuple(sorted(found))


def _value(word: str, name: str, low: int, high: int) -> int:
    named = NAMES.get(name, {}).get(word.lower())
    if named is not None:
        return named
    if not word.isdigit():
        named_too = " or a name" if name in NAMES else ""
        raise ValueError(f"{name} {word!r} is not a number{named_too}")
    if not low <= int(word) <= high:
        raise ValueError(f"{name} {word} is out of range {low}-{high}")
    return int(word)


def _instant(naive: datetime, zone: ZoneInfo) -> float | None:
    """The unix time of a local wall time: its first occurrence when it repeats, None when a
    DST change skips it."""
    at = naive.replace(tzinfo=zone).timestamp()
    if datetime.fromtimestamp(at, zone).replace(tzinfo=None) != naive:
        return None
    return at


class CronJob(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[cron.job]`: the job each tick pushes (Faktory Enterprise's fields)."""

    type: str
    queue: str = "default"
    args: list[Any] = msgspec.field(default_factory=list)
    retry: int | None = None
    reserve_for: int = 0
    custom: dict[str, Any] | None = None


class CronEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One `[[cron]]` entry; `timezone` (an IANA name) is Hopper's, UTC by default."""

    schedule: str
    job: CronJob
    timezone: str = "UTC"


class Periodic(msgspec.Struct, frozen=True):
    """A checked entry, ready to run: its stable id, schedule and zone."""

    id: str
    entry: CronEntry
    schedule: Schedule
    zone: ZoneInfo

    def job(self, tick: float, now: float, salt: str) -> Job:
        """The job a tick pushes: jid `<entry id>-<tick>-<salt>` (unique per push, and says
        which entry and tick it came from), created now."""
        spec = self.entry.job
        return Job(
            jid=f"{self.id}-{int(tick)}-{salt}",
            jobtype=spec.type,
            queue=spec.queue,
            args=list(spec.args),
            retry=spec.retry,
            reserve_for=spec.reserve_for,
            custom=dict(spec.custom) if spec.custom is not None else None,
            created_at="",
        )


def compile_entry(entry: CronEntry, where: str) -> Periodic:
    """Check an entry and make it ready; raises ValueError naming the setting (`where`, as
    `cron[2]`) and what is wrong with it."""
    try:
        schedule = Schedule.parse(entry.schedule)
    except ValueError as exc:
        raise ValueError(f"{where}.schedule: {exc}") from None
    try:
        zone = ZoneInfo(entry.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{where}.timezone: unknown time zone {entry.timezone!r}") from None
    if schedule.next_after(time.time(), zone) is None:  # its days fall in skipped local times
        raise ValueError(f"{where}.schedule: {entry.schedule!r} never fires in {entry.timezone}")
    if not entry.job.type:
        raise ValueError(f"{where}.job.type must not be empty")
    canonical = [" ".join(entry.schedule.split()), entry.timezone, entry.job]
    digest = hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()
    periodic = Periodic(digest[:ENTRY_ID_CHARS], entry, schedule, zone)
    job = periodic.job(0.0, 0.0, "check")
    try:
        check_queue_name(job.queue)
        validate_new(job, 0.0)
        settle_rules(job, 0.0, due_at(job, 0.0))  # what its push will check
    except BrokerError as exc:
        raise ValueError(f"{where}.job: {exc.message}") from None
    return periodic


def compile_all(entries: tuple[CronEntry, ...]) -> list[Periodic]:
    """Check every entry (ValueError names the first bad one) and make them ready."""
    ready: list[Periodic] = []
    for i, entry in enumerate(entries):
        periodic = compile_entry(entry, f"cron[{i}]")
        for j, earlier in enumerate(ready):
            if earlier.id == periodic.id:
                raise ValueError(f"cron[{i}] repeats cron[{j}]")
        ready.append(periodic)
    return ready
