"""`AsyncClient`: the client for asyncio and trio programs, with the surface of `Client`."""

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, Unpack

from hopper_client import commands
from hopper_client.aio_connection import AsyncConnection
from hopper_client.backoff import Backoff
from hopper_client.base import FULL_POLL, ClientBase
from hopper_client.batches import AsyncBatch, batch_spec
from hopper_client.commands import (
    BatchStatus,
    Call,
    Limits,
    MutateCommand,
    MutateTarget,
    QueueSettings,
    WorkerState,
)
from hopper_client.errors import ConnectionLost, QueueFull, ResultTimeout
from hopper_client.events import AsyncEventStream, events_line
from hopper_client.history import HistoryFilters, HistoryPage, history
from hopper_client.jobs import At, format_at, make_job
from hopper_client.operations import JobPage, ListOptions, ListTarget, list_jobs, signal_worker
from hopper_client.pipeline import AsyncPipeline
from hopper_client.schema.jobs import DEFAULT_QUEUE, Job, JobState
from hopper_client.shared import AsyncSharedConnection
from hopper_client.transports import Event, new_event, sleep

T = TypeVar("T")


class AsyncClient(ClientBase[AsyncConnection, AsyncSharedConnection]):
    """`Client` for async code: the same methods, awaited; works under asyncio and trio.

    One instance belongs to one event loop; its connections are pooled so concurrent tasks can
    share it, and its pushes share one connection. Cancelling a command closes its pooled
    connection (its outcome is then unknown); a cancelled push leaves the shared one open
    unless it was being written.
    """

    _opening: Event | None = None  # set once a shared connection being opened is ready

    async def _call(self, call: Call[T], *, shared: bool = False) -> T:
        """Send a command and parse its reply, on a pooled connection of its own or, `shared`,
        on the connection the tasks share for pushes (client/shared.py)."""
        backoff = Backoff(self.retry_for)
        while True:
            conn = None
            try:
                if shared:
                    reply = await (await self._shared_connection()).request(call.line)
                else:
                    conn = self._take_idle() or await self._open()
                    reply = await conn.request(call.line)
            except ConnectionLost as exc:
                if conn is not None:
                    conn.close()
                self._drop_idle()
                await sleep(backoff.delay(exc))
                continue
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if conn is not None:
                self._give(conn)
            return call.parse(reply, backoff.attempts > 0)

    async def _shared_connection(self) -> AsyncSharedConnection:
        """The connection the tasks share, opened again once it broke (by one task; the
        others wait for it)."""
        while self._shared is None or self._shared.broken is not None:
            if self._opening is not None:
                await self._opening.wait()
                continue
            self._opening = opening = new_event()
            try:
                self._shared = AsyncSharedConnection(await self._open())
            finally:
                self._opening = None
                opening.set()
        return self._shared

    async def _open(self) -> AsyncConnection:
        """A new connection, handshake done (not from the pool), to the first broker of the
        list that answers (see _in_turn)."""
        failed: ConnectionLost | None = None
        for endpoint in self._in_turn():
            try:
                conn = await AsyncConnection.open(self, endpoint, self.identity)
            except ConnectionLost as exc:
                failed = exc
                continue
            self._answered(endpoint)
            return conn
        assert failed is not None
        raise failed

    def pipeline(self) -> AsyncPipeline:
        """Push without waiting for each reply: `async with client.pipeline() as pipe:`,
        `await pipe.push(...)`; refused jobs are in `pipe.refused` at the end."""
        return AsyncPipeline(self)

    async def push(
        self,
        jobtype: str,
        args: Iterable[Any] = (),
        *,
        queue: str = DEFAULT_QUEUE,
        at: At = None,
        retry: int | None = None,
        reserve_for: int | None = None,
        custom: dict[str, Any] | None = None,
        jid: str | None = None,
        timeout: float | timedelta | None = None,
        priority: int | None = None,
        group: str | None = None,
        after: Iterable[str] = (),
        after_policy: str | None = None,
        wait: float = 0.0,
    ) -> str:
        """Push one job and return its jid (see `Client.push`)."""
        job = make_job(
            jobtype,
            args,
            queue=queue,
            at=at,
            retry=retry,
            reserve_for=reserve_for,
            custom=custom,
            jid=jid,
            timeout=timeout,
            priority=priority,
            group=group,
            after=after,
            after_policy=after_policy,
        )
        return await self.push_job(job, wait=wait)

    async def push_job(self, job: Job, wait: float = 0.0) -> str:
        """Push a job built with `make_job`; returns its jid. A full queue raises QueueFull,
        at once or after `wait` seconds of trying again."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return await self._call(commands.push(job), shared=True)
            except QueueFull:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                await sleep(min(FULL_POLL, left))

    async def push_bulk(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push jobs (in PUSHB lines written together); returns {jid: error} of the refused."""
        async with self.pipeline() as pipe:
            await pipe.push_bulk(jobs)
        return pipe.refused

    async def push_workflow(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push jobs that refer to each other in one PUSHB, all or nothing (see
        `Client.push_workflow`)."""
        return await self._call(commands.push_bulk(list(jobs)))

    async def fetch(self, *queues: str) -> Job | None:
        """Reserve the next job of the first non-empty queue; None after the broker's wait."""
        return await self._call(commands.fetch(queues or (DEFAULT_QUEUE,)))

    async def ack(self, jid: str) -> None:
        """Report a fetched job done."""
        await self._call(commands.ack(jid))

    async def fail(
        self, jid: str, errtype: str = "", message: str = "", backtrace: Iterable[str] = ()
    ) -> None:
        """Report a fetched job failed."""
        await self._call(commands.fail(jid, errtype, message, backtrace))

    async def beat(self, current_state: str = "", rss_kb: int = 0) -> WorkerState:
        """Heartbeat of this client's `wid`; returns the state the broker wants it in."""
        return await self._call(commands.beat(self.wid, current_state, rss_kb))

    async def cancel(self, jid: str) -> JobState:
        """Cancel a job (JOB CANCEL): one waiting (queued, scheduled, retrying) is cancelled at
        once; a running one keeps state working with `cancel_requested` until its worker
        stops it. A finished or dead job is left as it is. Returns the job's state."""
        return await self._call(commands.cancel(jid))

    async def state(self, jid: str) -> JobState:
        """Where the job is now, its timestamps, attempts, failure, progress and result."""
        return await self._call(commands.state(jid))

    async def result(self, jid: str, timeout: float | None = None) -> Any:
        """Wait until the job is over and return its result (what its function returned, as
        JSON; None when it left none). Raises JobFailed when it was discarded, died or was
        cancelled, UnknownJob for a jid the broker does not know, ResultTimeout after
        `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            state = await self._call(commands.wait(jid, commands.wait_step(self.timeout, left)))
            if state.state in commands.ENDED or state.state == "unknown":
                return commands.outcome(state)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"job {jid} is {state.state} after {timeout:g}s")

    async def track(
        self,
        jid: str,
        percent: int | None = None,
        desc: str | None = None,
        reserve_until: At = None,
    ) -> None:
        """Report progress (TRACK SET); `reserve_until` extends the job's reservation."""
        until = None if reserve_until is None else format_at(reserve_until)
        await self._call(commands.track(jid, percent, desc, until))

    async def log(self, jid: str, line: str) -> None:
        """Add a line to the job's log (kept with its state; the oldest lines go first)."""
        await self._call(commands.log_line(jid, line))

    async def history(
        self, jid: str | None = None, **filters: Unpack[HistoryFilters]
    ) -> HistoryPage:
        """The history (Hopper): the archived entries of `jid`, or a page of archived jobs
        newest first, filtered by queue, jobtype, final state(s) and time range (unix seconds
        or RFC 3339); pass the page's `cursor` for the next one."""
        return await self._call(history(jid, **filters))

    async def info(self) -> dict[str, Any]:
        """The broker's INFO document."""
        return await self._call(commands.info())

    async def flush(self) -> None:
        """Delete every job and counter."""
        await self._call(commands.flush())

    async def pause(self, *queues: str) -> None:
        """Stop handing out jobs of these queues."""
        await self._call(commands.queue("PAUSE", queues))

    async def resume(self, *queues: str) -> None:
        """Hand out jobs of paused queues again."""
        await self._call(commands.queue("RESUME", queues))

    async def remove_queues(self, *queues: str) -> None:
        """Delete these queues and their waiting jobs."""
        await self._call(commands.queue("REMOVE", queues))

    async def latency(self, *queues: str) -> dict[str, float]:
        """Seconds the oldest waiting job of each queue has waited."""
        return await self._call(commands.latency(queues))

    async def mutate(
        self,
        cmd: MutateCommand,
        target: MutateTarget,
        *,
        jids: Sequence[str] = (),
        jobtype: str = "",
        regexp: str = "",
    ) -> None:
        """Clear, kill, discard or requeue the jobs of a set that match the filter."""
        await self._call(commands.mutate(cmd, target, jids=jids, jobtype=jobtype, regexp=regexp))

    async def list_jobs(self, target: ListTarget, **options: Unpack[ListOptions]) -> JobPage:
        """One page of the jobs in a set (JOB LIST, Hopper): "retries", "scheduled", "dead" or
        "working", across queues, filtered; pass the page's `cursor` back for the next one
        (see ListOptions)."""
        return await self._call(list_jobs(target, **options))

    async def signal_worker(self, wid: str, state: Literal["quiet", "terminate"]) -> WorkerState:
        """Ask a worker process to quiet (fetch no more) or terminate (WORKER, Hopper; as
        Faktory's Web UI does): its next heartbeat is told. Returns its state."""
        return await self._call(signal_worker(wid, state))

    async def set_queue(
        self,
        *queues: str,
        jobtypes: Mapping[str, Limits] | None = None,
        **settings: Unpack[QueueSettings],
    ) -> None:
        """QUEUE SET (Hopper): settings of these queues (`*`: every listed one), and limits per
        jobtype in them (`jobtypes={"Mail": {"rate": 20}}`); a setting not given stays as it
        is, 0 clears a limit."""
        await self._call(commands.queue_settings(queues, settings, jobtypes))

    async def drain(self, on: bool = True) -> None:
        """DRAIN ON|OFF (Hopper): every queue refuses pushes (`Draining`), or not."""
        await self._call(commands.drain(on))

    def batch(
        self,
        *,
        description: str = "",
        success: Job | None = None,
        complete: Job | None = None,
        parent_bid: str = "",
    ) -> AsyncBatch:
        """A new batch (Faktory Enterprise), with a `success` and/or `complete` callback job
        (`make_job(...)`): `async with client.batch(...) as batch:` sends BATCH NEW, jobs pushed
        through `batch` join it, and a clean exit commits it (an exception does not). A
        `parent_bid` makes it a child batch; see client/batches.py."""
        return AsyncBatch(self, spec=batch_spec(description, success, complete, parent_bid))

    def open_batch(self, bid: str) -> AsyncBatch:
        """An existing batch, to add jobs to it: `async with client.open_batch(bid) as batch:` sends
        BATCH OPEN, and commits it again on a clean exit."""
        return AsyncBatch(self, bid=bid)

    async def batch_status(self, bid: str) -> BatchStatus:
        """BATCH STATUS: the batch's counters and the state of its callbacks."""
        return await self._call(commands.batch_status(bid))

    def events(
        self,
        *,
        queues: Iterable[str] | None = None,
        jobtypes: Iterable[str] | None = None,
        jids: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
    ) -> AsyncEventStream:
        """The broker's events (pushed, fetched, done, failed, ...) as they happen, on a
        connection of its own; each given filter must match (see client/events.py)."""
        return AsyncEventStream(self, events_line(queues, jobtypes, jids, events))

    async def aclose(self) -> None:
        """Close the idle connections and the shared one."""
        self._drop_idle()
        if self._shared is not None:
            self._shared.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
