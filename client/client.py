"""`Client`: the blocking client, thread-safe through a small pool of connections."""

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, Unpack

from hopper_client import commands
from hopper_client.backoff import Backoff
from hopper_client.base import FULL_POLL, ClientBase
from hopper_client.batches import Batch, batch_spec
from hopper_client.commands import (
    BatchStatus,
    Call,
    Limits,
    MutateCommand,
    MutateTarget,
    QueueSettings,
    WorkerState,
)
from hopper_client.connection import Connection
from hopper_client.errors import ConnectionLost, QueueFull, ResultTimeout
from hopper_client.events import EventStream, events_line
from hopper_client.history import HistoryFilters, HistoryPage, history
from hopper_client.jobs import At, format_at, make_job
from hopper_client.operations import JobPage, ListOptions, ListTarget, list_jobs, signal_worker
from hopper_client.pipeline import Pipeline
from hopper_client.schema.jobs import DEFAULT_QUEUE, Job, JobState
from hopper_client.shared import SharedConnection

T = TypeVar("T")


class Client(ClientBase[Connection, SharedConnection]):
    """Push jobs and talk to a Faktory-protocol broker from blocking code.

    `url` is `tcp://[:password@]host:port` (`tcp+tls://` for TLS); None reads HOPPER_URL or
    FAKTORY_URL. Several brokers sharing one Redis: a comma-separated list (or a list) of
    URLs; a new connection goes to the first that answers, the last that did first.
    Safe to share between threads: each command borrows a pooled connection, but for pushes,
    which the threads send together on one shared connection (client/shared.py).
    A command whose connection breaks is sent again on a new one, with backoff, for up to
    `retry_for` seconds; then ConnectionLost is raised. `-CODE message` replies raise
    ServerError. `close()` closes idle connections; the client reconnects if used again.
    """

    def _call(self, call: Call[T], *, shared: bool = False) -> T:
        """Send a command and parse its reply, on a pooled connection of its own or, `shared`,
        on the connection the threads share for pushes (client/shared.py)."""
        backoff = Backoff(self.retry_for)
        while True:
            conn = None
            try:
                if shared:
                    reply = self._shared_connection().request(call.line)
                else:
                    conn = self._take_idle() or self._open()
                    reply = conn.request(call.line)
            except ConnectionLost as exc:
                if conn is not None:
                    conn.close()
                self._drop_idle()
                time.sleep(backoff.delay(exc))
                continue
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if conn is not None:
                self._give(conn)
            return call.parse(reply, backoff.attempts > 0)

    def _shared_connection(self) -> SharedConnection:
        """The connection the threads share, opened again once it broke."""
        shared = self._shared
        if shared is None or shared.broken is not None:
            with self._sharing:
                shared = self._shared
                if shared is None or shared.broken is not None:
                    shared = self._shared = SharedConnection(self._open())
        return shared

    def _open(self) -> Connection:
        """A new connection to the first broker of the list that answers (see _in_turn)."""
        failed: ConnectionLost | None = None
        for endpoint in self._in_turn():
            try:
                conn = Connection.open(
                    endpoint,
                    self.identity,
                    timeout=self.timeout,
                    connect_timeout=self.connect_timeout,
                    ssl_context=self.ssl_context,
                )
            except ConnectionLost as exc:
                failed = exc
                continue
            self._answered(endpoint)
            return conn
        assert failed is not None
        raise failed

    def pipeline(self) -> Pipeline:
        """Push without waiting for each reply: `with client.pipeline() as pipe:`,
        `pipe.push(...)`; refused jobs are in `pipe.refused` at the end (see Pipeline)."""
        return Pipeline(self)

    def push(
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
        """Push one job and return its jid; `at` is a datetime, a timedelta or RFC3339 text;
        `timeout` the seconds the job may run (custom.timeout: the Worker's deadline)."""
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
        return self.push_job(job, wait=wait)

    def push_job(self, job: Job, wait: float = 0.0) -> str:
        """Push a job built with `make_job`; returns its jid. A full queue raises QueueFull,
        at once or after `wait` seconds of trying again."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return self._call(commands.push(job), shared=True)
            except QueueFull:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(FULL_POLL, left))

    def push_bulk(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push jobs built with `make_job` (in PUSHB lines written together); returns
        {jid: error} of the refused."""
        with self.pipeline() as pipe:
            pipe.push_bulk(jobs)
        return pipe.refused

    def push_workflow(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push jobs that refer to each other (`after`) in one PUSHB: stored all or nothing
        (Hopper: one queue, 1,000 jobs at most); returns {jid: error} of the refused."""
        return self._call(commands.push_bulk(list(jobs)))

    def fetch(self, *queues: str) -> Job | None:
        """Reserve the next job of the first non-empty queue; None after the broker's wait."""
        return self._call(commands.fetch(queues or (DEFAULT_QUEUE,)))

    def ack(self, jid: str) -> None:
        """Report a fetched job done."""
        self._call(commands.ack(jid))

    def fail(
        self, jid: str, errtype: str = "", message: str = "", backtrace: Iterable[str] = ()
    ) -> None:
        """Report a fetched job failed; the broker retries it or moves it to the dead set."""
        self._call(commands.fail(jid, errtype, message, backtrace))

    def beat(self, current_state: str = "", rss_kb: int = 0) -> WorkerState:
        """Heartbeat of this client's `wid`; returns the state the broker wants it in."""
        return self._call(commands.beat(self.wid, current_state, rss_kb))

    def cancel(self, jid: str) -> JobState:
        """Cancel a job (JOB CANCEL): one waiting (queued, scheduled, retrying) is cancelled at
        once; a running one keeps state working with `cancel_requested` until its worker
        stops it. A finished or dead job is left as it is. Returns the job's state."""
        return self._call(commands.cancel(jid))

    def state(self, jid: str) -> JobState:
        """Where the job is now, its timestamps, attempts, failure, progress and result."""
        return self._call(commands.state(jid))

    def result(self, jid: str, timeout: float | None = None) -> Any:
        """Wait until the job is over and return its result (what its function returned, as
        JSON; None when it left none). Raises JobFailed when it was discarded, died or was
        cancelled, UnknownJob for a jid the broker does not know, ResultTimeout after
        `timeout` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            state = self._call(commands.wait(jid, commands.wait_step(self.timeout, left)))
            if state.state in commands.ENDED or state.state == "unknown":
                return commands.outcome(state)
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeout(f"job {jid} is {state.state} after {timeout:g}s")

    def track(
        self,
        jid: str,
        percent: int | None = None,
        desc: str | None = None,
        reserve_until: At = None,
    ) -> None:
        """Report progress (TRACK SET); `reserve_until` extends the job's reservation."""
        until = None if reserve_until is None else format_at(reserve_until)
        self._call(commands.track(jid, percent, desc, until))

    def log(self, jid: str, line: str) -> None:
        """Add a line to the job's log (kept with its state; the oldest lines go first)."""
        self._call(commands.log_line(jid, line))

    def history(self, jid: str | None = None, **filters: Unpack[HistoryFilters]) -> HistoryPage:
        """The history (Hopper): the archived entries of `jid`, or a page of archived jobs
        newest first, filtered by queue, jobtype, final state(s) and time range (unix seconds
        or RFC 3339); pass the page's `cursor` for the next one."""
        return self._call(history(jid, **filters))

    def info(self) -> dict[str, Any]:
        """The broker's INFO document."""
        return self._call(commands.info())

    def flush(self) -> None:
        """Delete every job and counter (for tests and development)."""
        self._call(commands.flush())

    def pause(self, *queues: str) -> None:
        """Stop handing out jobs of these queues (`*` for all)."""
        self._call(commands.queue("PAUSE", queues))

    def resume(self, *queues: str) -> None:
        """Hand out jobs of paused queues again (`*` for all)."""
        self._call(commands.queue("RESUME", queues))

    def remove_queues(self, *queues: str) -> None:
        """Delete these queues and their waiting jobs (`*` for all)."""
        self._call(commands.queue("REMOVE", queues))

    def latency(self, *queues: str) -> dict[str, float]:
        """Seconds the oldest waiting job of each queue has waited."""
        return self._call(commands.latency(queues))

    def mutate(
        self,
        cmd: MutateCommand,
        target: MutateTarget,
        *,
        jids: Sequence[str] = (),
        jobtype: str = "",
        regexp: str = "",
    ) -> None:
        """Clear, kill, discard or requeue the jobs of a set that match the filter."""
        self._call(commands.mutate(cmd, target, jids=jids, jobtype=jobtype, regexp=regexp))

    def list_jobs(self, target: ListTarget, **options: Unpack[ListOptions]) -> JobPage:
        """One page of the jobs in a set (JOB LIST, Hopper): "retries", "scheduled", "dead" or
        "working", across queues, filtered; pass the page's `cursor` back for the next one
        (see ListOptions)."""
        return self._call(list_jobs(target, **options))

    def signal_worker(self, wid: str, state: Literal["quiet", "terminate"]) -> WorkerState:
        """Ask a worker process to quiet (fetch no more) or terminate (WORKER, Hopper; as
        Faktory's Web UI does): its next heartbeat is told. Returns its state."""
        return self._call(signal_worker(wid, state))

    def set_queue(
        self,
        *queues: str,
        jobtypes: Mapping[str, Limits] | None = None,
        **settings: Unpack[QueueSettings],
    ) -> None:
        """QUEUE SET (Hopper): settings of these queues (`*`: every listed one), and limits per
        jobtype in them (`jobtypes={"Mail": {"rate": 20}}`); a setting not given stays as it
        is, 0 clears a limit."""
        self._call(commands.queue_settings(queues, settings, jobtypes))

    def drain(self, on: bool = True) -> None:
        """DRAIN ON|OFF (Hopper): every queue refuses pushes (`Draining`), or not."""
        self._call(commands.drain(on))

    def batch(
        self,
        *,
        description: str = "",
        success: Job | None = None,
        complete: Job | None = None,
        parent_bid: str = "",
    ) -> Batch:
        """A new batch (Faktory Enterprise), with a `success` and/or `complete` callback job
        (`make_job(...)`): `with client.batch(...) as batch:` sends BATCH NEW, jobs pushed
        through `batch` join it, and a clean exit commits it (an exception does not). A
        `parent_bid` makes it a child batch; see client/batches.py."""
        return Batch(self, spec=batch_spec(description, success, complete, parent_bid))

    def open_batch(self, bid: str) -> Batch:
        """An existing batch, to add jobs to it: `with client.open_batch(bid) as batch:` sends
        BATCH OPEN, and commits it again on a clean exit."""
        return Batch(self, bid=bid)

    def batch_status(self, bid: str) -> BatchStatus:
        """BATCH STATUS: the batch's counters and the state of its callbacks."""
        return self._call(commands.batch_status(bid))

    def events(
        self,
        *,
        queues: Iterable[str] | None = None,
        jobtypes: Iterable[str] | None = None,
        jids: Iterable[str] | None = None,
        events: Iterable[str] | None = None,
    ) -> EventStream:
        """The broker's events (pushed, fetched, done, failed, ...) as they happen, on a
        connection of its own; each given filter must match (see client/events.py)."""
        return EventStream(self, events_line(queues, jobtypes, jids, events))

    def close(self) -> None:
        """Close the idle connections and the shared one."""
        while (conn := self._take_idle()) is not None:
            conn.close(polite=True)
        if self._shared is not None:
            self._shared.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
