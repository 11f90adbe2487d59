"""Jobs by jid: where a job is (JOB STATE), what it says of itself (TRACK SET, JOB LOG), Faktory
Enterprise's view of it (TRACK GET), waiting until it is over (JOB WAIT), stopping it (JOB
CANCEL), and which of the jobs a worker runs it no longer holds (BEAT with jids).

A job is found through the jid index, which names the queue of a live job, or (as `~queue`) of
a finished one that is still kept (`finished_ttl`, `finished_max`): a finished job keeps its
record, in the queue's finished set, with a note of its state (when not done) and result.
Everything about one jid is read in one step (store/scripts/state.lua).
"""

from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

import msgspec
import trio

from hopper_broker.clock import Clock
from hopper_broker.config import Settings
from hopper_broker.doorbell import Doorbell
from hopper_broker.store.keys import CANCEL_MARK
from hopper_broker.store.redis import Store
from hopper_broker.store.tracking import Found
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import (
    OVER,
    Job,
    JobState,
    LogLine,
    Progress,
    TrackSet,
    decode_input,
    encode,
    format_time,
    job_decoder,
    parse_time,
)

PLACES = {  # where a live job is -> its state
    "queue": "queued",
    "working": "working",
    "scheduled": "scheduled",
    "retries": "retrying",
    "dead": "dead",
    "blocked": "blocked",  # waiting for its dependencies (workflows.py)
}
TRACK_STATES = {  # Hopper's state -> Faktory Enterprise's (TRACK GET)
    "queued": "enqueued",
    "scheduled": "enqueued",
    "working": "working",
    "retrying": "failed",
    "dead": "dead",
    "blocked": "enqueued",
    "done": "success",
    "discarded": "failed",
    "cancelled": "failed",
    "replaced": "failed",
    "expired": "failed",
}
MAX_BEAT_JIDS = 10_000  # jids one BEAT may list
T = TypeVar("T")


class Note(msgspec.Struct):
    """What is noted of a finished job (see store/scripts/lib.lua: note)."""

    state: str = "done"
    result: msgspec.Raw = msgspec.Raw()  # empty: the job left no result


progress_decoder = msgspec.json.Decoder(Progress)
note_decoder = msgspec.json.Decoder(Note)
track_set_decoder = msgspec.json.Decoder(TrackSet)
log_line_decoder = msgspec.json.Decoder(LogLine)


class Tracking:
    """Jobs by jid."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        finishes: Doorbell,
        kept: Callable[[], str],
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.finishes = finishes  # rung (through Redis) with the jid of each awaited finish
        self.kept = kept  # the keep policy of finished jobs (Manager.kept)

    async def state(self, jid: str) -> JobState:
        return (await self._find(jid))[0]

    async def find(self, jid: str) -> tuple[JobState, Job | None]:
        """A job's state and its decoded record (None: unknown)."""
        return await self._find(jid)

    async def _find(self, jid: str) -> tuple[JobState, Job | None]:
        owner = await self.store.tracking.owner(jid)
        if owner is None:
            return JobState(jid, "unknown"), None
        found = await self.store.tracking.find(owner[0], jid)
        job = job_decoder.decode(found.payload) if found.payload is not None else None
        return describe(jid, owner[0], found, job), job

    async def cancel(self, jid: str) -> JobState:
        """JOB CANCEL: a waiting, scheduled or retrying job ends cancelled; a reserved one is
        marked, its worker hears of it at its next BEAT, and it ends cancelled unless it is
        ACKed. Returns the job's state after it."""
        owner = await self.store.tracking.owner(jid)
        if owner is not None and not owner[1]:
            await self.store.tracking.cancel(owner[0], jid, self.clock(), self.kept())
        return await self.state(jid)

    async def dropped(self, wid: str, jids: list[str]) -> list[str]:
        """Which of `jids` (those a worker says it runs) it no longer holds: gone, finished,
        reserved by another worker, or with a cancel asked for."""
        if len(jids) > MAX_BEAT_JIDS:
            raise CommandError(f"BEAT lists more than {MAX_BEAT_JIDS} jids")
        queues = await self.store.jobs.queues_of(jids) if jids else []
        by_queue: dict[str, list[str]] = defaultdict(list)
        for jid, queue in zip(jids, queues, strict=True):
            if queue is not None:
                by_queue[queue].append(jid)
        kept = set()
        for queue, mine in by_queue.items():
            held = await self.store.tracking.held(queue, mine)
            for jid, (reserved, holder, cancelling) in zip(mine, held, strict=True):
                if reserved and holder == wid and not cancelling:
                    kept.add(jid)
        return [jid for jid in jids if jid not in kept]

    async def wait(self, jid: str, timeout: float) -> JobState:
        """The job's state once it is over (done, discarded, cancelled, dead), or when
        `timeout` seconds (at most max_wait) have passed, whichever comes first."""
        timeout = min(max(timeout, 0.0), self.settings().max_wait)
        deadline = trio.current_time() + timeout
        with self.finishes.listen([jid]) as finished:
            # Listen, then say so in Redis, then look: a finish from here on is heard.
            await self.store.tracking.await_(jid, self.clock() + timeout + 1)
            state = await self.state(jid)
            if state.state in (*OVER, "unknown"):
                return state
            with trio.move_on_at(deadline):
                await finished.wait()
        return await self.state(jid)

    async def track_get(self, jid: str) -> dict[str, object]:
        """TRACK GET: Faktory Enterprise's shape; jobs pushed without `custom.track` (and
        unknown ones) are `unknown`, as there."""
        state, job = await self._find(jid)
        if state.state == "unknown" or job is None or not (job.custom or {}).get("track"):
            return {"jid": jid, "state": "unknown", "updated_at": ""}
        progress = state.progress or Progress()
        answer: dict[str, object] = {"jid": jid}
        if progress.percent is not None:
            answer["percent"] = progress.percent
        if progress.desc is not None:
            answer["desc"] = progress.desc
        answer["state"] = TRACK_STATES[state.state]
        answer["updated_at"] = (
            progress.updated_at or state.finished_at or state.enqueued_at or state.created_at
        )
        return answer

    async def track_set(self, arg: bytes) -> None:
        """TRACK SET: progress, and a later reservation (never sooner, at most max_reservation
        from now). An unknown jid is ignored, as in Faktory Enterprise."""
        update = _decode(track_set_decoder, arg, "TRACK SET")
        now = self.clock()
        until = None
        if update.reserve_until:
            try:
                until = parse_time(update.reserve_until)
            except ValueError as exc:
                raise CommandError(f"invalid reserve_until: {exc}") from None
            until = min(until, now + self.settings().max_reservation)
        owner = await self.store.tracking.owner(update.jid)
        if owner is not None:
            desc = b"" if update.desc is None else encode(update.desc)
            await self.store.tracking.progress(
                owner[0],
                update.jid,
                format_time(now),
                percent=update.percent,
                desc=desc,
                reserve_until=until if until is not None and until > now else None,
            )

    async def log(self, arg: bytes) -> None:
        """JOB LOG: one more line of what a job is doing (at most max_log_lines are kept)."""
        entry = _decode(log_line_decoder, arg, "JOB LOG")
        config = self.settings()
        owner = await self.store.tracking.owner(entry.jid)
        if owner is None or not await self.store.tracking.progress(
            owner[0],
            entry.jid,
            format_time(self.clock()),
            line=encode(entry.line[: config.max_log_line]),
            most_lines=config.max_log_lines,
        ):
            raise CommandError(f"unknown job {entry.jid}")


def describe(jid: str, queue: str, found: Found, job: Job | None) -> JobState:
    """The state of a job from what its queue holds of it (`job`: its decoded record)."""
    if job is None:
        return JobState(jid, "unknown")
    progress = progress_decoder.decode(found.progress) if found.progress else None
    state = JobState(jid, PLACES.get(found.place, "queued"), queue, progress=progress)
    when = format_time(float(found.score)) if found.score is not None else ""
    if found.place == "finished":
        note = note_decoder.decode(found.note) if found.note else Note()
        state.state, state.finished_at = note.state, when
        if len(note.result):
            state.result = note.result
    elif found.place == "scheduled":
        state.at = when
    elif found.place == "retries":
        state.next_at = when
    elif found.place == "working":
        state.reserved_until = when
        holder = found.holder.decode() if found.holder else ""
        state.wid = holder.removeprefix(CANCEL_MARK)
        state.cancel_requested = holder.startswith(CANCEL_MARK)
    state.jobtype, state.created_at = job.jobtype, job.created_at
    state.enqueued_at, state.failure = job.enqueued_at, job.failure
    failures = job.failure.retry_count + 1 if job.failure else 0
    state.attempts = failures + (state.state in ("working", "done"))
    return state


def _decode(decoder: msgspec.json.Decoder[T], arg: bytes, verb: str) -> T:
    try:
        value = decode_input(decoder, arg)
    except msgspec.DecodeError:
        raise CommandError(f"invalid {verb} {arg.decode('utf-8', 'replace')}") from None
    if not getattr(value, "jid", ""):
        raise CommandError(f"{verb} needs a jid")
    return value
