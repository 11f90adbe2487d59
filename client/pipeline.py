"""Pipelined pushes: lines written without waiting for their replies, which are read in batches.

`Client.pipeline()` and `AsyncClient.pipeline()` hand one out; `push_bulk` runs on one. The
broker serves a run of PUSHes received together with one Redis call, so a producer pushing
this way costs both sides a fraction of a round trip per job.
"""

import itertools
import time
from collections import deque
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, Unpack

from hopper_client import commands
from hopper_client.backoff import Backoff
from hopper_client.commands import Call
from hopper_client.connection import Connection
from hopper_client.errors import ConnectionLost
from hopper_client.jobs import JobOptions, in_batch, make_job
from hopper_client.schema.jobs import Job
from hopper_client.transports import sleep
from hopper_client.wire import Reply

if TYPE_CHECKING:
    from hopper_client.aio import AsyncClient
    from hopper_client.aio_connection import AsyncConnection
    from hopper_client.client import Client

SEND_LINES = 100  # lines written together
SEND_BYTES = 256 * 1024  # bytes written together (a line longer than this goes alone)
PUSHB_JOBS = 1000  # jobs per PUSHB line
UNREAD_JOBS = 200  # jobs whose replies may wait unread while more lines go out: at a refusal
# each, they fit in the socket buffers, so the broker never blocks on a reply we do not read

Refusals = dict[str, str]


class Lines:
    """What a pipeline has built, written and heard back about; no I/O."""

    def __init__(self, bid: str = "") -> None:
        self.bid = bid  # the batch every job pushed joins ("": none)
        self.refused: Refusals = {}
        self._unsent: list[tuple[Call[Refusals], int]] = []  # (call, jobs it pushes)
        self._unsent_bytes = 0
        self._written: deque[tuple[Call[Refusals], int]] = deque()
        self._unread_jobs = 0
        self._resent = 0  # the oldest written calls that were written again on a new connection

    @property
    def idle(self) -> bool:
        """Nothing to write, nothing to hear back about."""
        return not (self._unsent or self._written)

    def add_job(self, job: Job) -> bool:
        """Queue a PUSH; True when enough lines are queued to write them."""
        return self._add(commands.pipelined_push(in_batch(job, self.bid)), 1)

    def add_jobs(self, jobs: Iterable[Job]) -> Iterator[None]:
        """Queue PUSHB lines of up to PUSHB_JOBS jobs; yields whenever they are to be written."""
        iterator = (in_batch(job, self.bid) for job in jobs)
        while chunk := list(itertools.islice(iterator, PUSHB_JOBS)):
            if self._add(commands.push_bulk(chunk), len(chunk)):
                yield

    def _add(self, call: Call[Refusals], jobs: int) -> bool:
        self._unsent.append((call, jobs))
        self._unsent_bytes += len(call.line)
        return len(self._unsent) >= SEND_LINES or self._unsent_bytes >= SEND_BYTES

    def rewind(self) -> bytes:
        """On a new connection: the written lines whose replies were lost, to write again."""
        self._resent = len(self._written)
        return b"".join(call.line for call, _ in self._written)

    def must_read(self, everything: bool) -> bool:
        """Whether to read a reply before writing more (every reply when `everything`)."""
        return bool(self._written) and (everything or self._unread_jobs > UNREAD_JOBS)

    def take(self) -> bytes:
        """The queued lines, now counted as written."""
        data = b"".join(call.line for call, _ in self._unsent)
        self._written += self._unsent
        self._unread_jobs += sum(jobs for _, jobs in self._unsent)
        self._unsent, self._unsent_bytes = [], 0
        return data

    def settle(self, reply: Reply) -> None:
        """The reply to the oldest written line."""
        call, jobs = self._written.popleft()
        self._unread_jobs -= jobs
        resent = self._resent > 0
        self._resent -= resent
        self.refused.update(call.parse(reply, resent))


class Pipeline:
    """Pushes over one connection without waiting for each reply; from `Client.pipeline()`.

    `push` returns the jid at once; replies are read in batches as more is pushed, and all of
    them by `flush()` and at the end of the `with` block. Jobs the broker refused are in
    `refused` ({jid: error}); every other push was accepted. A lost connection is replaced and
    the unconfirmed lines written again, for up to the client's `retry_for` (then
    ConnectionLost: those pushes may or may not have landed). One thread at a time. With a
    `bid` (from `Batch.pipeline()`) every job pushed joins that batch.
    """

    def __init__(self, client: "Client", bid: str = "") -> None:
        self.client = client
        self.lines = Lines(bid)
        self._conn: Connection | None = None

    @property
    def refused(self) -> Refusals:
        """{jid: error} of the pushes refused so far."""
        return self.lines.refused

    def push(self, jobtype: str, args: Iterable[Any] = (), **options: Unpack[JobOptions]) -> str:
        """Push a job (options as `make_job`'s) and return its jid without waiting."""
        return self.push_job(make_job(jobtype, args, **options))

    def push_job(self, job: Job) -> str:
        """Push a job built with `make_job`; returns its jid without waiting."""
        if self.lines.add_job(job):
            self._exchange(everything=False)
        return job.jid

    def push_bulk(self, jobs: Iterable[Job]) -> None:
        """Push jobs built with `make_job` in PUSHB lines of up to PUSHB_JOBS."""
        for _ in self.lines.add_jobs(jobs):
            self._exchange(everything=False)

    def flush(self) -> Refusals:
        """Write everything and wait for every reply; returns `refused`."""
        self._exchange(everything=True)
        return self.refused

    def _exchange(self, everything: bool) -> None:
        backoff = Backoff(self.client.retry_for)
        while not self.lines.idle:
            try:
                if self._conn is None:
                    self._conn = self.client._take_idle() or self.client._open()
                    if resend := self.lines.rewind():
                        self._conn.send(resend)
                while self.lines.must_read(False):
                    self.lines.settle(self._conn.read())
                if data := self.lines.take():
                    self._conn.send(data)
                while self.lines.must_read(everything):
                    self.lines.settle(self._conn.read())
                return
            except ConnectionLost as exc:
                self._close()
                self.client._drop_idle()
                time.sleep(backoff.delay(exc))
            except BaseException:
                self._close()
                raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.flush()
        if self._conn is not None:
            self.client._give(self._conn)
            self._conn = None


class AsyncPipeline:
    """`Pipeline` for async code, from `AsyncClient.pipeline()`: the same, awaited."""

    def __init__(self, client: "AsyncClient", bid: str = "") -> None:
        self.client = client
        self.lines = Lines(bid)
        self._conn: AsyncConnection | None = None

    @property
    def refused(self) -> Refusals:
        """{jid: error} of the pushes refused so far."""
        return self.lines.refused

    async def push(
        self, jobtype: str, args: Iterable[Any] = (), **options: Unpack[JobOptions]
    ) -> str:
        """Push a job (options as `make_job`'s) and return its jid without waiting."""
        return await self.push_job(make_job(jobtype, args, **options))

    async def push_job(self, job: Job) -> str:
        """Push a job built with `make_job`; returns its jid without waiting."""
        if self.lines.add_job(job):
            await self._exchange(everything=False)
        return job.jid

    async def push_bulk(self, jobs: Iterable[Job]) -> None:
        """Push jobs built with `make_job` in PUSHB lines of up to PUSHB_JOBS."""
        for _ in self.lines.add_jobs(jobs):
            await self._exchange(everything=False)

    async def flush(self) -> Refusals:
        """Write everything and wait for every reply; returns `refused`."""
        await self._exchange(everything=True)
        return self.refused

    async def _exchange(self, everything: bool) -> None:
        backoff = Backoff(self.client.retry_for)
        while not self.lines.idle:
            try:
                if self._conn is None:
                    self._conn = self.client._take_idle() or await self.client._open()
                    if resend := self.lines.rewind():
                        await self._conn.send(resend)
                while self.lines.must_read(False):
                    self.lines.settle(await self._conn.read())
                if data := self.lines.take():
                    await self._conn.send(data)
                while self.lines.must_read(everything):
                    self.lines.settle(await self._conn.read())
                return
            except ConnectionLost as exc:
                self._close()
                self.client._drop_idle()
                await sleep(backoff.delay(exc))
            except BaseException:
                self._close()
                raise

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.flush()
        if self._conn is not None:
            self.client._give(self._conn)
            self._conn = None
