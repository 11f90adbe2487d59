"""One run of a worker: its connections, slots, heartbeat, signals and graceful shutdown.

Three connections: the heartbeat's, the fetcher's (FETCHes for the free slots, pipelined) and
the reporter's (ACKs and FAILs, batched). Jobs run as trio tasks; sync functions in a pool
of threads.
"""

import logging
import signal
import ssl
import time
from typing import TYPE_CHECKING, Any

import trio

from hopper_client import commands
from hopper_client.aio import AsyncClient
from hopper_client.backoff import Backoff
from hopper_client.bridge import AsyncioThread
from hopper_client.commands import WorkerState
from hopper_client.control import DeadlineExceeded, Hold, JobCancelled, Snooze, deadline
from hopper_client.errors import AuthenticationError, ClientError
from hopper_client.execution import Interrupted, Runner, message_of, rss_kb
from hopper_client.fetcher import Fetcher
from hopper_client.reporter import Reporter
from hopper_client.schema.jobs import Job
from hopper_client.threads import ThreadPool

if TYPE_CHECKING:
    from hopper_client.worker import Worker

log = logging.getLogger("hopper_client.worker")

REPORT_TIMEOUT = 5.0  # seconds after the grace to deliver the last ACKs and FAILs
RANK: dict[WorkerState, int] = {"running": 0, "quiet": 1, "terminate": 2}


class Shift:
    """Fetches and runs jobs with `worker.concurrency` slots until told to terminate."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.wid = worker.wid
        self.state: WorkerState = "running"
        self.client = self._connect(worker.ssl_context)  # HELLO and BEAT
        self.reporter = Reporter(self.client)
        self.fetcher = Fetcher(
            self.client,
            worker.queues,
            worker.concurrency,
            worker.concurrency if worker.prefetch is None else worker.prefetch,
            self._start,
            self.reporter,
        )
        self._terminating = trio.Event()
        self._forced = trio.Event()  # no more grace
        self._beat_now = trio.Event()
        self._fetching = trio.CancelScope()
        self._jobs: dict[str, Hold] = {}  # the running jobs
        self._job_tasks: trio.Nursery | None = None
        self._outer: trio.Nursery | None = None

    @property
    def active_slots(self) -> int:
        """Jobs running or fetched, and FETCHes awaiting their replies."""
        fetcher = self.fetcher
        return fetcher.running + len(fetcher.ready) + fetcher.outstanding

    def _connect(self, ssl_context: ssl.SSLContext | None) -> AsyncClient:
        """A client of this worker's own, one idle connection (the loops retry at their pace)."""
        worker = self.worker
        return AsyncClient(
            worker.url,
            worker.password,
            wid=worker.wid,
            labels=worker.labels,
            retry_for=0,
            ssl_context=ssl_context,
            max_idle=1,
        )

    def move(self, state: WorkerState) -> None:
        """Move the state forward (never back) and tell the broker at once."""
        if RANK[state] <= RANK[self.state]:
            return
        log.info("worker %s: %s", self.wid, state)
        self.state = state
        self.fetcher.stop()
        if state == "terminate":
            self._terminating.set()
        self._beat_now.set()

    def terminate(self) -> None:
        """Terminate; when already terminating, skip what is left of the grace."""
        if self.state == "terminate":
            self._forced.set()
        self.move("terminate")

    async def run(self, handle_signals: bool, task_status: trio.TaskStatus[None]) -> None:
        worker = self.worker
        asyncio_thread = AsyncioThread() if worker.async_backend == "asyncio" else None
        threads = ThreadPool(worker.concurrency)
        self._runner = Runner(worker.functions, worker.middleware, threads, asyncio_thread)
        try:
            async with trio.open_nursery() as outer:
                self._outer = outer
                if handle_signals:
                    await outer.start(self._watch_signals)
                await self._register()
                outer.start_soon(self._beat_loop)
                task_status.started()
                log.info(
                    "worker %s: %d slots on queues %s for %s",
                    self.wid,
                    worker.concurrency,
                    ",".join(worker.queues),
                    ",".join(worker.functions) or "no jobtypes",
                )
                async with trio.open_nursery() as reporting:
                    reporting.start_soon(self.reporter.run)
                    outer.start_soon(self._enforce_grace, reporting.cancel_scope)
                    async with trio.open_nursery() as self._job_tasks:
                        with self._fetching:
                            await self.fetcher.run()
                    await self._terminating.wait()
                    await self.reporter.drain()
                    reporting.cancel_scope.cancel()
                outer.cancel_scope.cancel()
        finally:
            threads.close()
            await self.client.aclose()
            if asyncio_thread is not None:
                asyncio_thread.close()
        log.info("worker %s: stopped", self.wid)

    async def _register(self) -> None:
        """Say HELLO and a first BEAT, waiting for the broker if it is not up yet."""
        backoff = Backoff()
        while not self._terminating.is_set():
            try:
                await self._beat("")
                return
            except AuthenticationError:
                raise
            except ClientError as exc:
                if backoff.attempts == 1:
                    log.warning("worker %s: waiting for the broker: %s", self.wid, exc)
                await _pause(backoff.delay(exc), self._terminating)

    def _start(self, job: Job) -> None:
        """Run a fetched job in a task of its own."""
        assert self._job_tasks is not None
        self._job_tasks.start_soon(self._perform, job)

    async def _perform(self, job: Job) -> None:
        hold = self._jobs[job.jid] = Hold(job, sync=self._runner.is_sync(job))
        started = time.perf_counter()
        error: BaseException | None = None
        returned: Any = None
        try:
            with hold.scope:
                returned = await self._runner.run(job, hold)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, ... fail the job alone
            if not _a_failure(exc):
                raise
            error = exc
        finally:
            del self._jobs[job.jid]
        if hold.scope.cancelled_caught:  # a thread left running sees job_cancelled()
            hold.stop(hold.why or "deadline")
            error = self._stopped(hold)
        duration = time.perf_counter() - started
        dropped = hold.why == "dropped" and error is not None
        if not dropped:
            self.reporter.report(job.jid, error, returned)
        self.fetcher.finished(duration)
        _log_outcome(job, duration, error, dropped)
        if dropped:
            await self._let_go(job.jid)

    def _stopped(self, hold: Hold) -> Exception:
        """What a job that the worker stopped is reported with."""
        if hold.why == "dropped":
            return JobCancelled(f"the broker took the job back ({self.wid})")
        if hold.why == "interrupted":
            return Interrupted(f"the worker stopped before the job finished ({self.wid})")
        seconds = deadline(hold.job) or 0.0  # a cancel scope is cancelled by nothing else
        return DeadlineExceeded(f"the job ran longer than its timeout of {seconds:g} s")

    def _drop(self, jids: list[str]) -> None:
        """Stop the jobs the broker no longer lets this worker hold (see _let_go)."""
        if not jids:
            return
        wanted = set(jids)
        for jid in wanted:
            if (hold := self._jobs.get(jid)) is not None and not hold.stopped:
                log.info(
                    "worker %s: job %s %s taken back by the broker", self.wid, hold.job.jobtype, jid
                )
                hold.stop("dropped")
        for job in self.fetcher.discard(wanted):
            log.info(
                "worker %s: job %s %s taken back before it started", self.wid, job.jobtype, job.jid
            )
            if self._outer is not None:
                self._outer.start_soon(self._let_go, job.jid)

    async def _let_go(self, jid: str) -> None:
        """A job the broker took back ended without a result. FAIL it when this worker still
        holds it (its cancel was asked for): the broker ends it cancelled now rather than
        when its reservation expires. Otherwise say nothing: it may be another worker's now
        (FAIL would end that worker's run)."""
        try:
            with trio.move_on_after(REPORT_TIMEOUT):
                state = await self.client.state(jid)
                mine = state.state == "working" and state.wid == self.wid
                if mine and state.cancel_requested and jid not in self._jobs:
                    self.reporter.report(jid, JobCancelled(f"cancelled while running ({self.wid})"))
        except ClientError as exc:
            log.warning("worker %s: job %s taken back, its state unknown: %s", self.wid, jid, exc)

    async def _enforce_grace(self, reporting: trio.CancelScope) -> None:
        """Once terminating: after the grace, stop fetching and interrupt running jobs;
        REPORT_TIMEOUT later, abandon the reports not yet delivered."""
        await self._terminating.wait()
        await _pause(self.worker.grace, self._forced)
        self._fetching.cancel()
        unstarted = self.fetcher.unstarted()
        if self._jobs or unstarted:
            log.warning(
                "worker %s: interrupting %d running jobs, failing %d not started",
                self.wid,
                len(self._jobs),
                len(unstarted),
            )
        for job in unstarted:
            self.reporter.report(job.jid, Interrupted(f"the worker stopped ({self.wid})"))
        for hold in list(self._jobs.values()):
            hold.stop("interrupted")
        await trio.sleep(REPORT_TIMEOUT)
        reporting.cancel()

    async def _beat_loop(self) -> None:
        while True:
            await _pause(self.worker.heartbeat, self._beat_now)
            self._beat_now = trio.Event()
            try:
                await self._beat("" if self.state == "running" else self.state)
            except ClientError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.wid, exc)
                await self.client.aclose()  # a new connection's HELLO registers the worker again

    async def _beat(self, current_state: str) -> None:
        """BEAT with the jids of the jobs this worker holds; follow the broker's answer."""
        held = [jid for jid, hold in self._jobs.items() if not hold.stopped]
        held += [job.jid for job in self.fetcher.ready]
        beat = await self.client._call(commands.heartbeat(self.wid, current_state, rss_kb(), held))
        self.move(beat.state)
        self._drop(beat.drop)

    async def _watch_signals(self, task_status: trio.TaskStatus[None]) -> None:
        wanted = (signal.SIGTSTP, signal.SIGTERM, signal.SIGINT)
        with trio.open_signal_receiver(*wanted) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGTSTP:
                    self.move("quiet")
                else:
                    self.terminate()


async def _pause(seconds: float, until: trio.Event) -> None:
    """Sleep `seconds` or until the event is set."""
    with trio.move_on_after(seconds):
        await until.wait()


def _a_failure(raised: BaseException) -> bool:
    """Whether what a job raised is its failure: anything but trio's cancellation (of the
    worker's scopes, alone or in a group), which must go on up."""
    if isinstance(raised, BaseExceptionGroup):
        return raised.split(trio.Cancelled)[1] is not None
    return not isinstance(raised, trio.Cancelled)


def _log_outcome(job: Job, duration: float, error: BaseException | None, dropped: bool) -> None:
    """One line per job, with `extra` fields for structured logging."""
    quiet = error is None or dropped or isinstance(error, Snooze)
    level = logging.INFO if quiet else logging.WARNING
    if not log.isEnabledFor(level):
        return
    outcome = "done" if error is None else "failed"
    if dropped:
        outcome = "dropped"
    elif isinstance(error, Snooze):
        outcome = "snoozed"
    attempt = job.failure.retry_count + 2 if job.failure else 1
    fields = {
        "jid": job.jid,
        "jobtype": job.jobtype,
        "queue": job.queue,
        "attempt": attempt,
        "duration": duration,
        "outcome": outcome,
    }
    if quiet or error is None:
        log.info("job %s %s %s in %.3f s", job.jobtype, job.jid, outcome, duration, extra=fields)
    else:
        log.warning(
            "job %s %s failed in %.3f s: %s: %s",
            job.jobtype,
            job.jid,
            duration,
            type(error).__name__,
            message_of(error),
            exc_info=error,
            extra=fields,
        )
