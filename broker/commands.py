"""The verb table: decode each command's argument, make one manager call, encode the reply
(the verbs that steer rather than run jobs are in control.py).

Handlers hold no lifecycle rules. Coded errors become `-CODE message`; anything unexpected is
logged and answered `-ERR internal error`. A run of consecutive PUSH commands received together
(a pipelining producer) is stored with one manager call, each PUSH still getting its own reply;
so are lone PUSHes and ACKs of connections served at the same time (gathering.py).
"""

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

from hopper_broker import control, protocol
from hopper_broker.arguments import decode
from hopper_broker.fetching import Fetched
from hopper_broker.gathering import Gathering
from hopper_broker.manager import Manager
from hopper_broker.protocol import Command
from hopper_broker.session import Session
from hopper_broker.store.jobs import Acked
from hopper_client.schema.errors import BrokerError, CommandError
from hopper_client.schema.jobs import (
    Job,
    ack_decoder,
    beat_decoder,
    decode_pushed,
    decode_pushed_many,
    encode,
    fail_decoder,
)

log = logging.getLogger(__name__)

INTERNAL_ERROR = protocol.error("ERR internal error")

Handler = Callable[["Commands", Session, bytes], Awaitable[bytes]]
BEAT_REPLIES = {
    "quiet": protocol.bulk(b'{"state":"quiet"}'),
    "terminate": protocol.bulk(b'{"state":"terminate"}'),
}
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
        if len(jobs) == 1 and not self.manager.chains:  # (middleware may await anything)
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
                ack = decode(ack_decoder, command.arg, "ACK")
                if not ack.jid:
                    raise CommandError(f"invalid ACK {command.arg.decode('utf-8', 'replace')}")
            except CommandError as exc:
                replies[i] = protocol.error(exc.render())
                continue
            items.append(Acked(ack.jid, session.recall(ack.jid), bytes(ack.result), session.wid))
            positions.append(i)
        if len(items) == 1 and not self.manager.chains:
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
        report = decode(fail_decoder, arg, "FAIL")
        queue = session.recall(report.jid)
        await self.manager.fail(report, queue, self.clock(), session.wid)
        if self.observer is not None:
            self.observer.finished([(report.jid, queue)], False)
        return protocol.OK

    async def beat(self, session: Session, arg: bytes) -> bytes:
        """BEAT; with `jids` (Hopper) the reply is always {"state", "drop": [jids it no
        longer holds]}."""
        beat = decode(beat_decoder, arg, "BEAT")
        state = await self.manager.workers.beat(
            beat.wid, beat.current_state, beat.rss_kb, self.clock()
        )
        if beat.jids is None:
            return BEAT_REPLIES.get(state, protocol.OK)
        drop = await self.manager.tracking.dropped(beat.wid, beat.jids)
        return protocol.bulk(encode({"state": state, "drop": drop}))


def _same_run(command: Command, first: Command) -> bool:
    """Whether `command` joins the run that `first` started (FETCH: same queues too)."""
    return command.verb == first.verb and (command.verb != "FETCH" or command.arg == first.arg)


def _fill_errors(
    replies: list[bytes], positions: list[int], outcomes: list[BrokerError | None]
) -> None:
    for i, error in zip(positions, outcomes, strict=True):
        if error is not None:
            replies[i] = protocol.error(error.render())


TABLE: dict[str, Handler] = {
    "PUSHB": Commands.pushb,
    "FAIL": Commands.fail,
    "BEAT": Commands.beat,
    **control.TABLE,
}

Run = Callable[[Commands, Session, list[Command], bool], Awaitable[list[bytes]]]
RUNS: dict[str, Run] = {
    "PUSH": Commands.push_run,
    "ACK": Commands.ack_run,
    "FETCH": Commands.fetch_run,
}
