"""JOB LIST's shapes (pure): the query, a page of entries, its cursor and its filters.

A page walks one sorted set (retries, scheduled, dead, working) of one queue or of several,
merged in score order. The cursor is the last entry seen, `<score>:<jid>` (the score as Redis
wrote it), so the walk goes on after it wherever entries moved in between: an entry that stays
put is listed exactly once, one that moves (requeued, retried, killed) is listed where it was
when the walk passed it, or not at all.
"""

import re

import msgspec

from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import Job, check_queue_name, job_decoder

SCORE = re.compile(r"-?[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?")  # a cursor's score (Redis's %.17g)

TARGETS = ("retries", "scheduled", "dead", "working")
DESCENDING = frozenset({"dead"})  # newest first by default; the others soonest first
DEFAULT_LIMIT = 50  # entries in a page when the query does not say
MAX_LIMIT = 1000  # entries in a page at most
# Entries looked at per call when a filter (jobtype, error) must read them: a page that finds
# fewer matches in this window ends early, with a cursor to go on from.
SCAN_WINDOW = 1000


class ListQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The argument of JOB LIST."""

    target: str
    queues: list[str] = msgspec.field(default_factory=list)  # empty: every queue
    jobtype: str = ""  # the jobtype, exactly
    error: str = ""  # text in the failure's errtype or message, any case
    order: str = ""  # "asc" (lowest score first) or "desc"; default: dead desc, others asc
    cursor: str = ""  # from the previous page; empty: from the start
    limit: int = DEFAULT_LIMIT

    def check(self) -> None:
        """Raise CommandError for a query that cannot be run."""
        if self.target not in TARGETS:
            raise CommandError(f"JOB LIST: target must be one of {', '.join(TARGETS)}")
        if self.order not in ("", "asc", "desc"):
            raise CommandError("JOB LIST: order must be asc or desc")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise CommandError(f"JOB LIST: limit must be from 1 to {MAX_LIMIT}")
        for queue in self.queues:
            check_queue_name(queue)
        if self.cursor:
            parse_cursor(self.cursor)

    @property
    def descending(self) -> bool:
        return self.order == "desc" or (not self.order and self.target in DESCENDING)

    @property
    def filtered(self) -> bool:
        return bool(self.jobtype or self.error)

    def matches(self, payload: bytes) -> bool:
        """Whether a stored job passes the jobtype and error filters."""
        if not self.filtered:
            return True
        job = job_decoder.decode(payload)
        if self.jobtype and job.jobtype != self.jobtype:
            return False
        return not self.error or _failure_text(job).find(self.error.casefold()) >= 0


class Listed(msgspec.Struct, frozen=True):
    """One entry: its queue, jid, score (when it is due: next attempt, run time, purge time or
    reservation expiry, unix seconds) and the stored job."""

    queue: str
    jid: str
    score: float
    job: msgspec.Raw


class Page(msgspec.Struct, frozen=True):
    """A page of entries; `cursor` is where the next one starts (None: nothing after these);
    `scanned` counts the entries looked at (more than listed when a filter skipped some)."""

    jobs: list[Listed]
    cursor: str | None
    scanned: int


def parse_cursor(cursor: str) -> tuple[bytes, str]:
    """(score as Redis wrote it, jid) of a cursor."""
    score, sep, jid = cursor.partition(":")
    if not sep or not jid or not SCORE.fullmatch(score):
        raise CommandError(f"JOB LIST: not a cursor: {cursor}")
    return score.encode(), jid


def make_cursor(score: bytes, jid: str) -> str:
    return f"{score.decode()}:{jid}"


def sort_key(score: bytes, jid: str) -> tuple[float, bytes]:
    """The order of a sorted set: score, then the member's bytes."""
    return float(score), jid.encode()


def _failure_text(job: Job) -> str:
    failure = job.failure
    return "" if failure is None else f"{failure.errtype}: {failure.message}".casefold()
