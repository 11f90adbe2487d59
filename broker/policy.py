"""The rules a pushed job may carry in `custom`: uniqueness and expiry as Faktory Enterprise
spells them (`unique_for`, `unique_until`, `expires_at`, `expires_in`; and Hopper's
`unique_key`, `unique_until = "ttl" | "replace"`), and Hopper's own retry policy (`backoff`).

Pure: what a push asks for, checked, turned into what the broker enforces.
"""

import hashlib
import math
import random
import re
from typing import Any, NamedTuple

import msgspec

from hopper_client.schema.errors import BrokerError, CommandError
from hopper_client.schema.jobs import QUEUE_NAME, Job, format_time, parse_time

UNIQUE_MODES = ("success", "start", "ttl", "replace")
DEFAULT_PRIORITY = 5  # a job without a priority has this one
MAX_UNIQUE_KEY = 1000  # characters of an explicit unique_key
MAX_UNIQUE_FOR = 10 * 365 * 86_400  # seconds a unique lock may be asked for
MAX_EXPIRES_IN = 10 * 365 * 86_400  # seconds `custom.expires_in` may give: a time Python can write
NOT_UNIQUE = BrokerError("Job not unique", "NOTUNIQUE")  # Faktory Enterprise's reply
BACKOFF_KINDS = ("fixed", "linear", "exponential", "list")
MAX_BACKOFF = 180 * 86_400  # seconds: no retry is scheduled further out
MAX_FACTOR = 100.0
MAX_EXPONENT = 1000  # retry counts beyond this grow no further (the cap applies long before)
MAX_DELAYS = 1000
MAX_QUEUE_SIZE = 1_000_000_000  # the largest max_size, concurrency or burst a queue takes
MAX_RATE = 1_000_000.0  # jobs a second, the largest rate a queue takes
MAX_GROUP = 200  # characters of a group name
GROUP_NAME = re.compile(rf'[^"\\\x00-\x1f\x7f]{{1,{MAX_GROUP}}}')


class Unique(NamedTuple):
    """The identity lock a unique job takes: its digest, for how long, and until what."""

    digest: str
    ttl_ms: int
    mode: str


def unique_of(job: Job, delay: float) -> Unique | None:
    """The lock a job asks for (None: not unique); `delay` is how long until it runs. Raises
    CommandError for rules that cannot be honoured."""
    custom = job.custom or {}
    seconds = custom.get("unique_for")
    if seconds is None:
        return None
    if not _positive(seconds) or seconds > MAX_UNIQUE_FOR:
        raise CommandError(
            f"custom.unique_for must be a number of seconds above 0, at most {MAX_UNIQUE_FOR}"
        )
    mode = custom.get("unique_until", "success")
    if mode not in UNIQUE_MODES:
        raise CommandError(f"custom.unique_until must be one of {', '.join(UNIQUE_MODES)}")
    key = custom.get("unique_key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= MAX_UNIQUE_KEY):
        raise CommandError(f"custom.unique_key must be a string of 1 to {MAX_UNIQUE_KEY} chars")
    identity: Any = ["key", key] if key is not None else ["job", job.jobtype, job.args]
    digest = hashlib.sha256(msgspec.json.encode(identity, order="sorted")).hexdigest()
    ttl = min(seconds + max(delay, 0.0), 2 * MAX_UNIQUE_FOR)  # a job scheduled far ahead
    return Unique(digest, math.ceil(ttl * 1000), mode)


class Backoff(msgspec.Struct, forbid_unknown_fields=True):
    """`custom.backoff`: the delay before retry number n (0-based) of a job. fixed: `delay`;
    linear: `delay * (n + 1)`; exponential: `delay * factor ** n`; list: `delays[n]`, the last
    repeating. Then capped at `max`, and shortened by a random part of up to `jitter` (0-1)."""

    kind: str
    delay: float = 0.0
    factor: float = 2.0
    max: float = MAX_BACKOFF
    jitter: float = 0.0
    delays: list[float] = msgspec.field(default_factory=list)

    def seconds(self, count: int, rng: random.Random) -> float:
        if self.kind == "fixed":
            base = self.delay
        elif self.kind == "linear":
            base = self.delay * (count + 1)
        elif self.kind == "exponential":
            base = self.delay * self.factor ** min(count, MAX_EXPONENT)
        else:
            base = self.delays[min(count, len(self.delays) - 1)]
        capped = min(base, self.max, MAX_BACKOFF)
        return capped * (1 - self.jitter * rng.random())


def backoff_of(job: Job) -> Backoff | None:
    """The retry policy a job carries (None: the reference's curve); raises CommandError for
    one that is malformed."""
    spec = (job.custom or {}).get("backoff")
    if spec is None:
        return None
    try:
        policy = msgspec.convert(spec, Backoff)
    except msgspec.ValidationError as exc:
        raise CommandError(f"custom.backoff: {exc}") from None
    problem = _backoff_problem(policy)
    if problem:
        raise CommandError(f"custom.backoff: {problem}")
    return policy


def _backoff_problem(policy: Backoff) -> str:
    if policy.kind not in BACKOFF_KINDS:
        return f"kind must be one of {', '.join(BACKOFF_KINDS)}"
    numbers = [policy.delay, policy.max, *policy.delays]
    if not all(math.isfinite(n) and n >= 0 for n in numbers) or policy.max > MAX_BACKOFF:
        return f"delays must be between 0 and {MAX_BACKOFF} seconds"
    if not 1 <= policy.factor <= MAX_FACTOR:
        return f"factor must be between 1 and {MAX_FACTOR}"
    if not 0 <= policy.jitter <= 1:
        return "jitter must be between 0 and 1"
    if policy.kind == "list" and not 0 < len(policy.delays) <= MAX_DELAYS:
        return f"a list needs 1 to {MAX_DELAYS} delays"
    return ""


def due_at(job: Job, now: float) -> str:
    """The score a pushed job waits for in the scheduled set, from its `at` ('': due now).
    Raises CommandError for an `at` that cannot be read."""
    if not job.at:
        return ""
    try:
        when = parse_time(job.at)
    except ValueError as exc:
        raise CommandError(f"invalid timestamp for 'at': \"{job.at}\": {exc}") from None
    return repr(when) if when > now else ""


def settle_rules(job: Job, now: float, at: str) -> tuple[Unique | None, float | None]:
    """Check the rules a pushed job asks for and settle them in it: its priority, group,
    retry policy, unique lock and expiry (`at`: its due_at). Returns (the unique lock, when
    it expires); raises CommandError for a rule that cannot work."""
    settle_priority(job)
    settle_group(job)
    backoff_of(job)  # a malformed retry policy is refused now, not at the first failure
    unique = unique_of(job, float(at) - now if at else 0.0)
    return unique, expiry_of(job, now)


def settle_priority(job: Job) -> None:
    """Check a job's priority (top-level `priority`, or `custom.priority` for clients that
    cannot send other fields) and store it where the scripts read it: 1-9, the default 5
    stored as none. Raises CommandError for anything else."""
    given: Any = job.priority or (job.custom or {}).get("priority")
    if given is None or given == 0:
        return
    if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given <= 9:
        raise CommandError("priority must be a whole number from 1 to 9")
    job.priority = 0 if given == DEFAULT_PRIORITY else given


def settle_group(job: Job) -> None:
    """Check a job's group (top-level `group`, or `custom.group`) and store it where the
    scripts read it. Raises CommandError for a group that is not 1 to MAX_GROUP characters
    without quotes, backslashes or control characters."""
    given: Any = job.group or (job.custom or {}).get("group")
    if given is None or given == "":
        return
    if not isinstance(given, str) or not GROUP_NAME.fullmatch(given):
        raise CommandError(
            f"group must be a string of 1 to {MAX_GROUP} characters, "
            "without quotes, backslashes or control characters"
        )
    job.group = given


def expiry_of(job: Job, now: float) -> float | None:
    """When a job expires (unix seconds; None: never), from Faktory Enterprise's
    `custom.expires_at` (RFC3339, any offset) or `custom.expires_in` (seconds from `now`,
    the push); `expires_at` wins. A job given `expires_in` is stored with the `expires_at` it
    makes, so every later look agrees. Raises CommandError for values that cannot be read."""
    custom = job.custom or {}
    at, seconds = custom.get("expires_at"), custom.get("expires_in")
    if at is not None:
        try:
            return parse_time(at) if isinstance(at, str) else _bad_expiry()
        except ValueError as exc:
            raise CommandError(f"custom.expires_at: {exc}") from None
    if seconds is None:
        return None
    if not _positive(seconds) or seconds > MAX_EXPIRES_IN:
        raise CommandError(
            f"custom.expires_in must be a number of seconds above 0, at most {MAX_EXPIRES_IN}"
        )
    expires = now + float(seconds)
    custom["expires_at"] = format_time(expires)
    return expires


def _bad_expiry() -> float:
    raise ValueError("not an RFC3339 timestamp")


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


COUNTS = (
    "max_size",
    "concurrency",
    "burst",
    "worker_concurrency",
    "group_concurrency",
    "group_burst",
)
RATES = ("rate", "group_rate")
JOBTYPE_LIMITS = ("concurrency", "rate", "burst")
SETTINGS_HELP = (
    "max_size=N, draining=on|off, concurrency=N, rate=R, burst=N, worker_concurrency=N, "
    "group_concurrency=N, group_rate=R, group_burst=N, <jobtype>.concurrency=N, "
    "<jobtype>.rate=R, <jobtype>.burst=N"
)


def queue_setting(word: str) -> tuple[str, str | None]:
    """One `name=value` of QUEUE SET, checked: (name to store, value to store or None to
    clear). max_size=N (waiting jobs; 0: no bound), draining=on|off, concurrency=N (jobs
    reserved at once; 0: no limit), rate=R (jobs a second; 0: no limit), burst=N (jobs a rate
    may give at once; 1 when not set), worker_concurrency=N (jobs reserved at once by one
    worker process, as Faktory Enterprise's `worker` throttle); group_* the same for each
    group of the queue, and
    `<jobtype>.<limit>` for the jobs of one jobtype in the queue (stored as t:<jobtype>:<limit>,
    as the scripts read it)."""
    name, _, value = word.partition("=")
    jobtype, dot, limit = name.rpartition(".")
    stored = f"t:{jobtype}:{limit}" if dot and jobtype and limit in JOBTYPE_LIMITS else name
    kind = limit if stored != name else name
    if kind in COUNTS and value.isascii() and value.isdigit():
        if int(value) <= MAX_QUEUE_SIZE:
            return stored, str(int(value)) if int(value) else None
    elif kind == "draining" and value in ("on", "off"):
        return stored, "1" if value == "on" else None
    elif kind in RATES:
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if 0 <= rate <= MAX_RATE:
            return stored, repr(rate) if rate else None
    raise CommandError(f"QUEUE SET: not a setting: {word} ({SETTINGS_HELP})")


class JobtypeRules(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """`[queues.<name>.jobtypes.<jobtype>]`: limits on the jobs of one jobtype in the queue."""

    concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None


class QueueRules(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """`[queues.<name>]` in the configuration file: what QUEUE SET sets (absent: as set at
    runtime)."""

    max_size: int | None = None
    draining: bool | None = None
    concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None
    worker_concurrency: int | None = None
    group_concurrency: int | None = None
    group_rate: float | None = None
    group_burst: int | None = None
    jobtypes: dict[str, JobtypeRules] = msgspec.field(default_factory=dict)

    def names(self) -> list[str]:
        """The settings given, as stored."""
        return [queue_setting(word)[0] for word in self.words()]

    def words(self) -> list[str]:
        """The QUEUE SET words these settings are."""
        values = msgspec.structs.asdict(self)
        del values["jobtypes"]
        for jobtype, rules in self.jobtypes.items():
            for limit, value in msgspec.structs.asdict(rules).items():
                values[f"{jobtype}.{limit}"] = value
        return [f"{name}={_word(value)}" for name, value in values.items() if value is not None]


class Throttle(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of Faktory Enterprise's `[throttles]` table (`<queue> = {concurrency = N,
    timeout = S}` or `{worker = N, timeout = S}`): the queue's `concurrency` or
    `worker_concurrency`. `timeout` (seconds a lock may be held) is read and checked; in Hopper
    a slot is the reservation itself, which its own expiry (reserve_for) frees."""

    concurrency: int | None = None
    worker: int | None = None
    timeout: float | None = None


def with_throttles(
    queues: dict[str, QueueRules], throttles: dict[str, Throttle]
) -> dict[str, QueueRules]:
    """`[queues.<name>]` with `[throttles]` folded in; raises ValueError naming the setting for
    a throttle that cannot work or says again what `[queues]` says."""
    merged = dict(queues)
    for queue, throttle in throttles.items():
        where = f"throttles.{queue}"
        if (throttle.concurrency is None) == (throttle.worker is None):
            raise ValueError(f"{where}: give one of concurrency or worker")
        if throttle.timeout is not None and not throttle.timeout > 0:
            raise ValueError(f"{where}.timeout: must be a number of seconds above 0")
        rules = merged.get(queue, QueueRules())
        name = "concurrency" if throttle.concurrency is not None else "worker_concurrency"
        if getattr(rules, name) is not None:
            raise ValueError(f"{where}: queues.{queue}.{name} is set too")
        value = throttle.concurrency if throttle.concurrency is not None else throttle.worker
        merged[queue] = msgspec.structs.replace(rules, **{name: value})
    return merged


def check_queue_rules(rules: dict[str, QueueRules]) -> None:
    """Raise ValueError naming the setting for queue settings that cannot work."""
    for queue, rule in rules.items():
        if not QUEUE_NAME.fullmatch(queue):
            raise ValueError(f"queues.{queue}: not a queue name ([a-zA-Z0-9._-]+)")
        for jobtype in rule.jobtypes:
            if not jobtype or "=" in jobtype:
                raise ValueError(f"queues.{queue}.jobtypes: not a jobtype name: {jobtype!r}")
        for word in rule.words():
            try:
                queue_setting(word)
            except CommandError:
                name, _, value = word.rpartition("=")
                where = f"jobtypes.{name}" if "." in name else name
                raise ValueError(f"queues.{queue}.{where}: not a valid value: {value}") from None


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if isinstance(value, float) else str(value)
