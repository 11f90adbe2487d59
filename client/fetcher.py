"""The worker's fetching: one connection keeps its free slots filled with pipelined FETCHes,
and carries the reports pending at each write before its FETCHes."""

import collections
import logging
from collections.abc import Callable, Sequence

import trio

from broker.jobs import Job
from client import commands
from client.aio import AsyncClient, AsyncConnection
from client.backoff import Backoff
from client.errors import ClientError, ConnectionLost, ServerError
from client.reporter import Report, Reporter
from client.wire import Reply

log = logging.getLogger("client.worker")


class Fetcher:
    """Sends one FETCH per free slot, all in one write, and hands each job to `start`.

    The broker answers a run of FETCHes with what it has at once and makes the first FETCH
    it cannot serve wait, so the next write waits for every reply. While the queues are
    empty one FETCH is out at a time, so waits do not stack up; a job fetched opens every
    free slot again.
    """

    def __init__(
        self,
        client: AsyncClient,
        queues: Sequence[str],
        slots: int,
        start: Callable[[Job], None],
        reporter: Reporter,
    ) -> None:
        self.client = client
        self.slots = slots
        self.start = start
        self.reporter = reporter
        self._carried: collections.deque[Report] = collections.deque()  # written before FETCHes
        self.running = 0  # jobs handed to `start` and not finished
        self.outstanding = 0  # FETCHes sent and not answered
        self._fetch = commands.fetch(queues)
        self._empty = True  # the last reply had no job
        self._stopped = trio.Event()
        self._wake = trio.Event()

    def finished(self) -> None:
        """A job handed to `start` is over: its slot is free."""
        self.running -= 1
        self._wake.set()

    def stop(self) -> None:
        """Send no more FETCHes; `run` returns once those sent are answered."""
        self._stopped.set()
        self._wake.set()

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
                self.outstanding, self._empty = 0, True
                await self._pause("fetch failed", exc, backoff)
            finally:
                conn.close()
                self.reporter.lost(self._carried)
                self._carried.clear()

    async def _serve(self, conn: AsyncConnection, backoff: Backoff) -> None:
        self.reporter.held = True  # until it blocks, this task writes again before long
        try:
            while True:
                self._wake = trio.Event()
                if wanted := self._wanted():
                    self._carried.extend(self.reporter.take())
                    self.outstanding += wanted
                    lines = [report.call.line for report in self._carried]
                    await conn.send(b"".join(lines) + self._fetch.line * wanted)
                if not self.outstanding:
                    if self._stopped.is_set():
                        return
                    await self._wake.wait()  # a job that ends frees a slot: its report rides
                    continue
                with self.reporter.released():
                    replies = await conn.replies()
                if refused := self._take(replies):
                    with self.reporter.released():
                        await self._pause("fetch refused", refused, backoff)
                elif not self._empty:
                    backoff.reset()
                    # Let the jobs just started run first: those that end at once free their
                    # slots for the next write (trio may run this task before them once).
                    await trio.lowlevel.checkpoint()
                    await trio.lowlevel.checkpoint()
        finally:
            self.reporter.release()

    def _take(self, replies: list[Reply]) -> ServerError | None:
        """Settle the carried reports and start the jobs fetched; the last error reply."""
        refused = None
        for reply in replies:
            if self._carried:
                self.reporter.settle(self._carried.popleft(), reply)
                continue
            self.outstanding -= 1
            try:
                job = self._fetch.parse(reply, False)
            except ServerError as exc:
                job, refused = None, exc
            self._empty = job is None
            if job is not None:
                self.running += 1
                self.start(job)
        return refused

    def _wanted(self) -> int:
        """FETCHes to send now: one per free slot, or one while the queues are empty; none
        while some are unanswered (the broker is making them wait: the queues ran dry)."""
        if self.outstanding or self._stopped.is_set():
            return 0
        free = self.slots - self.running
        return min(free, 1) if self._empty else free

    async def _pause(self, what: str, exc: ClientError, backoff: Backoff) -> None:
        log.warning("worker %s: %s: %s", self.client.wid, what, exc)
        with trio.move_on_after(backoff.delay(exc)):
            await self._stopped.wait()
