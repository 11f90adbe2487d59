"""The worker's ACKs and FAILs, delivered in batches.

They ride with the fetcher's next FETCHes when it is about to write (one write, one wake-up
of the broker for both), else go over a connection of their own, so that they never wait
behind a FETCH the broker holds; the broker finds each job by its jid.
"""

import collections
import logging
from collections.abc import Iterable
from typing import Any

import trio

from hopper_client import commands
from hopper_client.aio import AsyncClient
from hopper_client.aio_connection import AsyncConnection
from hopper_client.backoff import Backoff
from hopper_client.commands import Call
from hopper_client.control import Fatal, Snooze
from hopper_client.errors import ClientError, ConnectionLost, ServerError
from hopper_client.execution import describe
from hopper_client.schema.errors import INVALID_RESULT, JOB_NOT_FOUND, RESULT_TOO_LARGE
from hopper_client.wire import Reply

log = logging.getLogger("hopper_client.worker")

REFUSED_FOR = 30.0  # seconds to keep reporting a job while the broker answers with errors
# The broker's refusals of an ACK's result (the job is then ACKed without it)
RESULT_REFUSED = (RESULT_TOO_LARGE.partition("(")[0], INVALID_RESULT.partition(":")[0])


class Report:
    """The ACK, FAIL or SNOOZE of one job, until the broker has taken it."""

    __slots__ = ("bare", "call", "jid", "refused", "resent", "then")

    def __init__(
        self,
        jid: str,
        call: Call[None],
        then: Call[None] | None = None,
        bare: Call[None] | None = None,
    ) -> None:
        self.jid = jid
        self.call = call
        self.then = then  # sent once the broker has taken `call` (MUTATE kill after a FAIL)
        self.bare = bare  # an ACK without its result, if the broker refuses the result
        self.resent = False  # written again on a new connection
        self.refused: Backoff | None = None


class Reporter:
    """Delivers the reports that the fetcher does not carry (it carries them while `held`),
    all pending in one write: through lost connections for as long as it takes (a report
    whose reply was lost is written again), through error replies for REFUSED_FOR seconds.
    A report whose job is no longer reserved is done."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.unsettled = 0  # reports not yet taken by the broker (nor given up)
        self._pending: list[Report] = []
        self._wake = trio.Event()
        self._settled = trio.Event()
        self._later: trio.Nursery | None = None  # where refused reports wait to be sent again
        self.held = False  # the fetcher's next write will carry new reports (see `carried`)

    def report(self, jid: str, error: BaseException | None, result: Any = None) -> None:
        """ACK the job (with what its function returned, unless None), FAIL it with the
        error, SNOOZE it when the error is Snooze, FAIL then kill it (to the dead set) when it
        is Fatal. A result that is not JSON is left out (logged)."""
        then = bare = None
        if isinstance(error, Snooze):
            call = commands.snooze(jid, error.seconds)
        elif error is not None:
            call = commands.fail(jid, *describe(error))
            if isinstance(error, Fatal):
                then = commands.mutate("kill", "retries", jids=[jid])
        else:
            try:
                call = commands.ack(jid, result)
            except (TypeError, ValueError) as exc:
                log.warning("worker %s: result of %s not sent: %s", self.client.wid, jid, exc)
                call = commands.ack(jid)
            else:
                bare = None if result is None else commands.ack(jid)
        self._add(Report(jid, call, then, bare), wake=not self.held)
        self.unsettled += 1

    def take(self) -> list[Report]:
        """The pending reports, which the caller writes; each gets `settle()` or `lost()`."""
        taken, self._pending = self._pending, []
        return taken

    def settle(self, report: Report, reply: Reply) -> None:
        """The broker's reply to a report."""
        try:
            report.call.parse(reply, report.resent)
        except ServerError as exc:
            if report.bare is not None and exc.message.startswith(RESULT_REFUSED):
                wid, jid = self.client.wid, report.jid
                log.warning("worker %s: result of %s not kept: %s", wid, jid, exc)
                self._add(Report(report.jid, report.bare), wake=True)  # the ACK, bare
                return
            log.warning(
                "worker %s: broker refused report of %s: %s", self.client.wid, report.jid, exc
            )
            if not exc.message.startswith(JOB_NOT_FOUND.format("")) and self._later:
                report.refused = report.refused or Backoff(REFUSED_FOR)
                try:
                    self._later.start_soon(self._again, report, report.refused.delay(exc))
                    return
                except ServerError:
                    pass  # refused for too long: given up
        else:
            if report.then is not None:  # still unsettled: the follow-up is its second half
                self._add(Report(report.jid, report.then), wake=True)
                return
        self.unsettled -= 1
        if not self.unsettled:
            self._settled.set()

    def carried(self, carried: bool) -> None:
        """Whether the fetcher's next write will soon carry new reports; if not, those
        pending are delivered here."""
        self.held = carried
        if not carried and self._pending:
            self._wake.set()

    def lost(self, reports: Iterable[Report]) -> None:
        """Reports written whose replies were lost with their connection: to write again."""
        unheard = list(reports)
        for report in unheard:
            report.resent = True
        self._pending[:0] = unheard
        self._wake.set()  # the fetcher lost its connection or stopped: deliver them here

    async def drain(self) -> None:
        """Wait until every report is delivered or given up."""
        while self.unsettled:
            self._settled = trio.Event()
            await self._settled.wait()

    async def run(self) -> None:
        """Deliver reports until cancelled."""
        lost = Backoff()
        conn: AsyncConnection | None = None
        async with trio.open_nursery() as self._later:
            while True:
                try:
                    conn = conn or await self.client._open()
                    await self._deliver(conn)
                    lost.reset()
                except ClientError as exc:
                    if conn is not None:
                        conn.close()
                        conn = None
                    if lost.attempts == 1:
                        log.warning("worker %s: cannot report yet: %s", self.client.wid, exc)
                    await trio.sleep(lost.delay(exc))

    async def _deliver(self, conn: AsyncConnection) -> None:
        while not self._pending:
            self._wake = trio.Event()
            await self._wake.wait()
        batch = collections.deque(self.take())
        try:
            await conn.send(b"".join(report.call.line for report in batch))
            while batch:
                reply = await conn.read()
                self.settle(batch.popleft(), reply)
        except ConnectionLost:
            self.lost(batch)
            raise

    async def _again(self, report: Report, delay: float) -> None:
        await trio.sleep(delay)
        self._add(report, wake=True)

    def _add(self, report: Report, wake: bool) -> None:
        self._pending.append(report)
        if wake:
            self._wake.set()
