"""The verb table: decode each command's argument, make one manager call, encode the reply.

Handlers hold no lifecycle rules. Coded errors become `-CODE message`; anything unexpected is
logged and answered `-ERR internal error`. A run of consecutive PUSH commands received together
(a pipelining producer) is stored with one manager call, each PUSH still getting its own reply;
so are lone PUSHes and ACKs of connections served at the same time (gathering.py).
"""

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import msgspec

from hopper_broker import protocol
from hopper_broker.gathering import Gathering
from hopper_broker.history import query_decoder
from hopper_broker.manager import Fetched, Manager
from hopper_broker.protocol import Command
from hopper_broker.session import Session
from hopper_broker.store.jobs import Acked
from hopper_client.schema.errors import BrokerError, CommandError
from hopper_client.schema.jobs import (
    Job,
    ack_decoder,
    beat_decoder,
    decode_input,
    decode_pushed,
    decode_pushed_many,
    encode,
    fail_decoder,
    mutation_decoder,
)
from hopper_client.schema.pages import ListQuery

log = logging.getLogger(__name__)
list_decoder = msgspec.json.Decoder(ListQuery)
T = TypeVar("T")

INTERNAL_ERROR = protocol.error("ERR internal error")

Handler = Callable[["Commands", Session, bytes], Awaitable[bytes]]
BEAT_REPLIES = {
    "quiet": protocol.bulk(b'{"state":"quiet"}'),
    "terminate": protocol.bulk(b'{"state":"terminate"}'),
}
DEFAULT_WAIT = 30.0  # seconds a JOB WAIT without a timeout waits
STOPS = ("END", "EVENTS")  # the verbs that end a connection's run of commands


class Observer(Protocol):
    """What watches the command path (the dashboard's metrics): cheap synchronous calls."""

    def command(self, verb: str, seconds: float, count: int) -> None:
        """`count` commands of `verb` got their replies `seconds` after they began."""

    def fetched(self, found: Sequence[Fetched]) -> None:
        """Jobs handed out."""

    def finished(self, jobs: Sequence[tuple[str, str | None]], ok: bool) -> None:
        """Jobs (jid, queue if known) ACKed (`ok`) or FAILed."""


class Commands:
    """Dispatches commands of identified connections to the manager."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        self.clock = manager.clock
        self.observer: Observer | None = None  # set by the dashboard (broker/web/metrics.py)
        self.pushes = Gathering(self._push_jobs)
        self.acks = Gathering(self._ack_jobs)

    async def run(self, session: Session, batch: list[Command]) -> tuple[list[bytes], int, bool]:
        """Run commands in order: (their replies, how many ran, whether they stopped at END or
        EVENTS, which the connection itself handles).

        Stops early rather than let a FETCH wait while replies are held back: the caller sends
        them and calls again with the commands left.
        """
        replies: list[bytes] = []
        i = 0
        while i < len(batch):
            command = batch[i]
            if command.verb in STOPS:
                return replies, i, True
            runner = RUNS.get(command.verb)
            started = time.perf_counter()
            if runner is None:
                replies.append(await self._reply(session, command))
                i += 1
                if self.observer is not None:
                    self.observer.command(command.verb, time.perf_counter() - started, 1)
                continue
            end = i + 1
            while end < len(batch) and _same_run(batch[end], command):
                end += 1
            try:
                done = await runner(self, session, batch[i:end], not replies)
            except BrokerError as exc:  # the whole run failed the same way (Redis away, say)
                done = [protocol.error(exc.render())] * (end - i)
            except Exception:
                log.exception("command %s failed", command.verb)
                done = [INTERNAL_ERROR] * (end - i)
            if self.observer is not None:
                self.observer.command(command.verb, time.perf_counter() - started, len(done))
            replies += done
            i += len(done)
            if i < end:
                break
        return replies, i, False

    async def _reply(self, session: Session, command: Command) -> bytes:
        try:
            return await self.dispatch(session, command)
        except BrokerError as exc:
            return protocol.error(exc.render())
        except Exception:
            log.exception("command %s failed", command.verb)
            return INTERNAL_ERROR

    async def push_run(
        self, session: Session, pushes: list[Command], may_wait: bool
    ) -> list[bytes]:
        """Consecutive PUSHes: decode each, store them together, reply to each."""
        replies: list[bytes] = [protocol.OK] * len(pushes)
        jobs, positions = [], []
        for i, command in enumerate(pushes):
            try:
                jobs.append(decode_pushed(command.arg))
                positions.append(i)
            except msgspec.DecodeError as exc:
                replies[i] = protocol.error(f"ERR invalid JSON: {exc}")
        if len(jobs) == 1:
            outcomes = [await self.pushes.one(jobs[0])]
        else:
            outcomes = await self._push_jobs(jobs)
        _fill_errors(replies, positions, outcomes)
        return replies

    async def _push_jobs(self, jobs: list[Job]) -> list[BrokerError | None]:
        return await self.manager.push_many(jobs, self.clock())

    async def ack_run(self, session: Session, acks: list[Command], may_wait: bool) -> list[bytes]:
        """Consecutive ACKs: finished together, one reply each."""
        replies: list[bytes] = [protocol.OK] * len(acks)
        items: list[Acked] = []
        positions = []
        for i, command in enumerate(acks):
            try:
                ack = _decode(ack_decoder, command.arg, "ACK")
                if not ack.jid:
                    raise CommandError(f"invalid ACK {command.arg.decode('utf-8', 'replace')}")
            except CommandError as exc:
                replies[i] = protocol.error(exc.render())
                continue
            items.append(Acked(ack.jid, session.recall(ack.jid), bytes(ack.result), session.wid))
            positions.append(i)
        if len(items) == 1:
            outcomes = [await self.acks.one(items[0])]
        else:
            outcomes = await self._ack_jobs(items)
        _fill_errors(replies, positions, outcomes)
        if self.observer is not None:
            pairs = zip(items, outcomes, strict=True)
            self.observer.finished([(a.jid, a.queue) for a, e in pairs if e is None], True)
        return replies

    async def _ack_jobs(self, items: list[Acked]) -> list[BrokerError | None]:
        return await self.manager.ack_many(items, self.clock())

    async def fetch_run(
        self, session: Session, fetches: list[Command], may_wait: bool
    ) -> list[bytes]:
        """Consecutive FETCHes of the same queues: as many as there are jobs for now, served
        together. The replies are for the first FETCHes only when jobs ran short; with
        `may_wait` the first FETCH waits for a job as a lone FETCH does, and if none came every
        FETCH of the run gets $-1; otherwise there may be no reply at all."""
        queues = fetches[0].arg.decode("utf-8", "replace").split()
        try:
            found = await self.manager.fetch_many(
                queues, session.wid, self.clock(), len(fetches), wait=may_wait
            )
        except BrokerError as exc:
            return [protocol.error(exc.render())]
        if not found:
            return [protocol.NULL] * len(fetches) if may_wait else []
        for fetched in found:
            session.remember(fetched.jid, fetched.queue)
        if self.observer is not None:
            self.observer.fetched(found)
        return [protocol.bulk(fetched.payload) for fetched in found]

    async def dispatch(self, session: Session, command: Command) -> bytes:
        handler = TABLE.get(command.verb)
        if handler is None:
            raise CommandError(f"unknown command {command.verb}")
        return await handler(self, session, command.arg)

    async def pushb(self, session: Session, arg: bytes) -> bytes:
        try:
            jobs = decode_pushed_many(arg)
        except msgspec.DecodeError as exc:
            raise CommandError(f"invalid JSON: {exc}") from None
        outcomes = await self.manager.push_many(jobs, self.clock())
        errors = {
            job.jid: error.message if error.code == "ERR" else error.render()
            for job, error in zip(jobs, outcomes, strict=True)
            if error is not None
        }
        return protocol.bulk(encode(errors))

    async def fail(self, session: Session, arg: bytes) -> bytes:
        report = _decode(fail_decoder, arg, "FAIL")
        queue = session.recall(report.jid)
        await self.manager.fail(report, queue, self.clock(), session.wid)
        if self.observer is not None:
            self.observer.finished([(report.jid, queue)], False)
        return protocol.OK

    async def beat(self, session: Session, arg: bytes) -> bytes:
        """BEAT; with `jids` (Hopper) the reply is always {"state", "drop": [jids it no
        longer holds]}."""
        beat = _decode(beat_decoder, arg, "BEAT")
        state = await self.manager.workers.beat(
            beat.wid, beat.current_state, beat.rss_kb, self.clock()
        )
        if beat.jids is None:
            return BEAT_REPLIES.get(state, protocol.OK)
        drop = await self.manager.tracking.dropped(beat.wid, beat.jids)
        return protocol.bulk(encode({"state": state, "drop": drop}))

    async def info(self, session: Session, arg: bytes) -> bytes:
        return protocol.bulk(encode(await self.manager.admin.info(self.clock())))

    async def flush(self, session: Session, arg: bytes) -> bytes:
        await self.manager.admin.flush()
        return protocol.OK

    async def queue(self, session: Session, arg: bytes) -> bytes:
        words = arg.decode("utf-8", "replace").split()
        if not words:
            raise CommandError("QUEUE needs a subcommand: PAUSE, RESUME, REMOVE, LATENCY or SET")
        sub, names = words[0].upper(), words[1:]
        options = [w for w in names if "=" in w]
        names = [w for w in names if "=" not in w]
        if not names:
            raise CommandError(f"QUEUE {sub} needs at least one queue name")
        if sub == "SET":
            if not options:
                raise CommandError("QUEUE SET needs at least one <setting>=<value>")
            await self.manager.admin.configure(names, options)
        elif sub == "PAUSE" and options:
            if len(options) != 1 or not options[0].startswith("for="):
                raise CommandError("QUEUE PAUSE takes one option: for=<seconds>")
            seconds = _seconds(options[0][4:], "QUEUE PAUSE")
            await self.manager.admin.pause(names, True, max(seconds, 0.0))
        elif options:
            raise CommandError(f"QUEUE {sub} takes no options")
        elif sub in ("PAUSE", "RESUME"):
            await self.manager.admin.pause(names, sub == "PAUSE")
        elif sub == "REMOVE":
            await self.manager.admin.remove(names)
        elif sub == "LATENCY":
            return protocol.bulk(encode(await self.manager.admin.latency(names, self.clock())))
        else:
            raise CommandError(f"no such QUEUE subcommand: {sub}")
        return protocol.OK

    async def track(self, session: Session, arg: bytes) -> bytes:
        """TRACK SET <json> | TRACK GET <jid> (Faktory Enterprise's job tracking)."""
        sub, _, rest = arg.partition(b" ")
        sub = sub.upper()
        if sub == b"SET":
            await self.manager.tracking.track_set(rest)
            return protocol.OK
        if sub == b"GET" and rest.strip():
            answer = await self.manager.tracking.track_get(rest.strip().decode("utf-8", "replace"))
            return protocol.bulk(encode(answer))
        raise CommandError("TRACK needs SET <json> or GET <jid>")

    async def job(self, session: Session, arg: bytes) -> bytes:
        """JOB STATE|CANCEL|WORKFLOW <jid> | JOB WAIT <jid> [seconds] | JOB SNOOZE <jid>
        <seconds> | JOB LOG <json> | JOB LIST <json> (Hopper extensions)."""
        words = arg.decode("utf-8", "replace").split(" ")
        sub, jid = words[0].upper(), words[1] if len(words) > 1 else ""
        tracking = self.manager.tracking
        if sub == "LOG":
            await tracking.log(arg[4:])
            return protocol.OK
        if sub == "LIST":
            query = _decode_as(list_decoder, arg[5:], "JOB LIST")
            return protocol.bulk(encode(await self.manager.listing.page(query)))
        if sub == "STATE" and len(words) == 2 and jid:
            return protocol.bulk(encode(await tracking.state(jid)))
        if sub == "WORKFLOW" and len(words) == 2 and jid:
            return protocol.bulk(encode(await self.manager.workflows.graph(jid)))
        if sub == "CANCEL" and len(words) == 2 and jid:
            return protocol.bulk(encode(await tracking.cancel(jid)))
        if sub == "WAIT" and len(words) in (2, 3) and jid:
            timeout = _seconds(words[2], "JOB WAIT") if len(words) == 3 else DEFAULT_WAIT
            return protocol.bulk(encode(await tracking.wait(jid, timeout)))
        if sub == "SNOOZE" and len(words) == 3 and jid:
            seconds = _seconds(words[2], "JOB SNOOZE")
            await self.manager.snooze(jid, seconds, session.recall(jid), self.clock())
            return protocol.OK
        raise CommandError(
            "JOB needs STATE <jid>, WAIT <jid> [seconds], CANCEL <jid>, SNOOZE <jid> <seconds>,"
            " WORKFLOW <jid>, LOG <json> or LIST <json>"
        )

    async def batch(self, session: Session, arg: bytes) -> bytes:
        """BATCH NEW <json> | OPEN <bid> | COMMIT <bid> | STATUS <bid> (Faktory Enterprise)."""
        sub, _, rest = arg.partition(b" ")
        sub, batches = sub.upper(), self.manager.batches
        if sub == b"NEW":
            return protocol.bulk((await batches.new(rest, self.clock())).encode())
        bid = rest.strip().decode("utf-8", "replace")
        if sub == b"OPEN" and bid:
            return protocol.bulk((await batches.open(bid)).encode())
        if sub == b"COMMIT" and bid:
            await batches.commit(bid, self.clock())
            return protocol.OK
        if sub == b"STATUS" and bid:
            return protocol.bulk(encode(await batches.status(bid)))
        raise CommandError("BATCH needs NEW <json>, OPEN <bid>, COMMIT <bid> or STATUS <bid>")

    async def drain(self, session: Session, arg: bytes) -> bytes:
        """DRAIN ON|OFF (Hopper): the whole broker refuses pushes, or takes them again."""
        word = arg.strip().upper()
        if word not in (b"ON", b"OFF"):
            raise CommandError("DRAIN needs ON or OFF")
        await self.manager.admin.drain(word == b"ON")
        return protocol.OK

    async def worker(self, session: Session, arg: bytes) -> bytes:
        """WORKER QUIET|TERMINATE <wid> (Hopper): ask a worker to quiet or stop, as Faktory's
        Web UI does; its next BEAT is answered with the state."""
        words = arg.decode("utf-8", "replace").split()
        if len(words) != 2 or words[0].upper() not in ("QUIET", "TERMINATE"):
            raise CommandError("WORKER needs QUIET <wid> or TERMINATE <wid>")
        state = await self.manager.workers.signal(words[1], words[0].lower())
        return protocol.bulk(encode({"wid": words[1], "state": state}))

    async def cron(self, session: Session, arg: bytes) -> bytes:
        """CRON LIST (Hopper extension): the periodic jobs with their next and last ticks."""
        if arg.strip().upper() != b"LIST":
            raise CommandError("CRON needs LIST")
        return protocol.bulk(encode(await self.manager.cron.listing(self.clock())))

    async def history(self, session: Session, arg: bytes) -> bytes:
        """HISTORY <json> (Hopper extension): archived jobs by jid, or a page newest first."""
        query = _decode(query_decoder, arg or b"{}", "HISTORY")
        return protocol.bulk(encode(await self.manager.history.query(query)))

    async def mutate(self, session: Session, arg: bytes) -> bytes:
        try:
            mutation = decode_input(mutation_decoder, arg)
        except msgspec.DecodeError as exc:
            raise CommandError(str(exc)) from None
        await self.manager.mutator.run(mutation, self.clock())
        return protocol.OK


def _same_run(command: Command, first: Command) -> bool:
    """Whether `command` joins the run that `first` started (FETCH: same queues too)."""
    return command.verb == first.verb and (command.verb != "FETCH" or command.arg == first.arg)


def _fill_errors(
    replies: list[bytes], positions: list[int], outcomes: list[BrokerError | None]
) -> None:
    for i, error in zip(positions, outcomes, strict=True):
        if error is not None:
            replies[i] = protocol.error(error.render())


def _seconds(word: str, verb: str) -> float:
    """A number of seconds given as a command word."""
    try:
        seconds = float(word)
    except ValueError:
        raise CommandError(f"{verb}: not a number of seconds: {word}") from None
    if not math.isfinite(seconds):
        raise CommandError(f"{verb}: not a number of seconds: {word}")
    return seconds


def _decode_as(decoder: msgspec.json.Decoder[T], arg: bytes, verb: str) -> T:
    """The argument decoded, or `<VERB>: <why>`."""
    try:
        return decode_input(decoder, arg)
    except msgspec.DecodeError as exc:
        raise CommandError(f"{verb}: {exc}") from None


def _decode(decoder: msgspec.json.Decoder[T], arg: bytes, verb: str) -> T:
    """The argument decoded, or the reference's `invalid <VERB> <payload>` error."""
    try:
        return decode_input(decoder, arg)
    except msgspec.DecodeError:
        raise CommandError(f"invalid {verb} {arg.decode('utf-8', 'replace')}") from None


TABLE: dict[str, Handler] = {
    "PUSHB": Commands.pushb,
    "FAIL": Commands.fail,
    "BEAT": Commands.beat,
    "INFO": Commands.info,
    "FLUSH": Commands.flush,
    "QUEUE": Commands.queue,
    "MUTATE": Commands.mutate,
    "TRACK": Commands.track,
    "JOB": Commands.job,
    "DRAIN": Commands.drain,
    "CRON": Commands.cron,
    "WORKER": Commands.worker,
    "HISTORY": Commands.history,
    "BATCH": Commands.batch,
}

Run = Callable[[Commands, Session, list[Command], bool], Awaitable[list[bytes]]]
RUNS: dict[str, Run] = {
    "PUSH": Commands.push_run,
    "ACK": Commands.ack_run,
    "FETCH": Commands.fetch_run,
}
