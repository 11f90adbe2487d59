"""The worker's fetching: one connection keeps the slots busy with pipelined FETCHes, fetching
ahead of free slots while jobs are short, and carries the pending reports in its writes."""

import collections
import logging
from collections.abc import Callable, Sequence

import trio

from hopper_client import commands
from hopper_client.aio import AsyncClient
from hopper_client.aio_connection import AsyncConnection
from hopper_client.backoff import Backoff
from hopper_client.errors import ClientError, ConnectionLost, ServerError
from hopper_client.reporter import Report, Reporter
from hopper_client.schema.jobs import Job
from hopper_client.wire import Reply

log = logging.getLogger("hopper_client.worker")

SHORT = 0.010  # seconds: jobs that run shorter on average are fetched ahead of free slots
WRITES_AHEAD = 2  # writes whose replies may be awaited at once


class Fetcher:
    """Writes FETCHes for the room it has, with the pending reports before them, and hands
    each job fetched to `start` when a slot is free.

    The room is one FETCH per free slot, plus `prefetch` jobs fetched ahead while the jobs
    run short (the next ones are then on their way while these run; a job fetched ahead
    waits about one job's run time). The broker answers a run of FETCHes with what it has at
    once and makes the first it cannot serve wait, so while the queues are empty one FETCH
    is out at a time and waits do not stack up; a job fetched opens the room again.
    """

    def __init__(
        self,
        client: AsyncClient,
        queues: Sequence[str],
        slots: int,
        prefetch: int,
        start: Callable[[Job], None],
        reporter: Reporter,
    ) -> None:
        self.client = client
        self.slots = slots
        self.prefetch = prefetch
        self.start = start
        self.reporter = reporter
        self.running = 0  # jobs handed to `start` and not finished
        self.outstanding = 0  # FETCHes sent and not answered
        self.ready: collections.deque[Job] = collections.deque()  # fetched ahead of a slot
        # Per write awaiting replies, what each reply answers: a report, or a FETCH (None).
        self._written: collections.deque[collections.deque[Report | None]] = collections.deque()
        self._fetch = commands.fetch(queues)
        self._average = SHORT  # run time of the recent jobs (moving average), seconds
        self._empty = True  # the last reply had no job
        self._refused: ServerError | None = None
        self._lost: ConnectionLost | None = None
        self._stopped = trio.Event()
        self._wake = trio.Event()  # for the writer: room, a reply, a stop
        self._written_to = trio.Event()  # for the reader: replies are due

    def finished(self, seconds: float) -> None:
        """A job handed to `start` ended after running `seconds`: its slot is free."""
        self.running -= 1
        self._average += (seconds - self._average) / 8
        if self.ready:
            self._begin(self.ready.popleft())
        self._wake.set()

    def unstarted(self) -> list[Job]:
        """Take the jobs fetched ahead that no slot has started (they stay reserved)."""
        jobs = list(self.ready)
        self.ready.clear()
        return jobs

    def discard(self, jids: set[str]) -> list[Job]:
        """Take out of the jobs fetched ahead those of `jids` (the broker took them back)."""
        gone = [job for job in self.ready if job.jid in jids]
        if gone:
            self.ready = collections.deque(job for job in self.ready if job.jid not in jids)
            self._wake.set()
        return gone

    def stop(self) -> None:
        """Send no more FETCHes; `run` returns once those sent are answered."""
        self._stopped.set()
        self._wake.set()
        self._carry()

    async def run(self) -> None:
        """Fetch until stopped, over a new connection after a drop (FETCHes whose replies
        were lost leave their jobs reserved until the reservation expires)."""
        backoff = Backoff()
        while not self._stopped.is_set():
            try:
                conn = await self.client._open()
            except ClientError as exc:
                await self._pause("cannot connect", exc, backoff)
                continue
            try:
                await self._serve(conn, backoff)
                return
            except ConnectionLost as exc:
                await self._pause("fetch failed", exc, backoff)
            finally:
                conn.close()
                unheard = [report for sent in self._written for report in sent if report]
                self._written.clear()
                self.outstanding, self._empty, self._lost = 0, True, None
                self.reporter.lost(unheard)
                self.reporter.carried(False)

    async def _serve(self, conn: AsyncConnection, backoff: Backoff) -> None:
        async with trio.open_nursery() as reading:
            reading.start_soon(self._read, conn, backoff)
            lost = await self._write(conn, backoff)
            reading.cancel_scope.cancel()
        if lost is not None:
            raise lost

    async def _write(self, conn: AsyncConnection, backoff: Backoff) -> ConnectionLost | None:
        """Write until stopped and answered; the lost connection, if it was lost."""
        self._carry()
        while self._lost is None:
            self._wake = trio.Event()  # before looking: what happens from here on wakes it
            if refused := self._refused:
                await self._pause("fetch refused", refused, backoff)
                self._refused = None
                self._carry()
            elif wanted := self._wanted():
                # Reports never wait behind a FETCH that the broker may be holding.
                reports = [] if self._written else self.reporter.take()
                sent: collections.deque[Report | None] = collections.deque(reports)
                lines = b"".join([report.call.line for report in sent if report])
                sent.extend([None] * wanted)
                self._written.append(sent)
                self.outstanding += wanted
                self._written_to.set()
                self._carry()
                try:
                    await conn.send(lines + self._fetch.line * wanted)
                except ConnectionLost as exc:
                    return exc
            elif self._stopped.is_set() and not self._written:
                return None
            else:
                await self._wake.wait()
        return self._lost

    async def _read(self, conn: AsyncConnection, backoff: Backoff) -> None:
        """Read the replies, start the jobs; a lost connection is left for the writer."""
        while True:
            while not self._written:
                self._written_to = trio.Event()
                await self._written_to.wait()
            try:
                replies = await conn.replies()
            except ConnectionLost as exc:
                self._lost = exc
                self._wake.set()
                return
            self._take(replies, backoff)
            self._carry()
            self._wake.set()

    def _take(self, replies: list[Reply], backoff: Backoff) -> None:
        """Settle the reports answered and start (or keep ready) the jobs fetched."""
        for reply in replies:
            sent = self._written[0]
            report = sent.popleft()
            if not sent:
                self._written.popleft()
            if report is not None:
                self.reporter.settle(report, reply)
                continue
            self.outstanding -= 1
            try:
                job = self._fetch.parse(reply, False)
            except ServerError as exc:
                job, self._refused = None, exc
            self._empty = job is None
            if job is None:
                continue
            backoff.reset()
            if self.running < self.slots:
                self._begin(job)
            else:
                self.ready.append(job)

    def _begin(self, job: Job) -> None:
        self.running += 1
        self.start(job)

    def _wanted(self) -> int:
        """FETCHes to write now: those the room allows, or one while the queues are empty
        and none is out."""
        if self._stopped.is_set() or len(self._written) >= WRITES_AHEAD:
            return 0
        if self._empty:
            return 0 if self.outstanding else min(self.slots - self.running, 1)
        ahead = self.prefetch if self._average < SHORT else 0
        return max(self.slots + ahead - self.running - len(self.ready) - self.outstanding, 0)

    def _carry(self) -> None:
        """Tell the reporter whether the next write here will soon carry new reports: it
        will while no FETCH is unanswered and a job ending makes room for more."""
        writing = not (self._stopped.is_set() or self._empty or self._refused)
        self.reporter.carried(writing and not self._written)

    async def _pause(self, what: str, exc: ClientError, backoff: Backoff) -> None:
        log.warning("worker %s: %s: %s", self.client.wid, what, exc)
        with trio.move_on_after(backoff.delay(exc)):
            await self._stopped.wait()
