"""`Worker`: fetch jobs, run their registered functions, report back; shut down gracefully.

Life cycle (the protocol's): running -> quiet (stop fetching, keep beating) -> terminate (stop
fetching, give running jobs `grace` seconds, FAIL the rest so they are retried soon, exit).
TSTP means quiet and TERM/INT terminate (a second TERM/INT skips the grace); the broker can
ask for either in its reply to BEAT.
"""

import contextlib
import functools
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

import trio

from broker.jobs import Job
from client.aio import AsyncClient
from client.backoff import Backoff
from client.bridge import AsyncioThread
from client.commands import WorkerState
from client.errors import AuthenticationError, ClientError, ConnectionLost, ServerError
from client.execution import (
    Interrupted,
    JobFunction,
    Middleware,
    Runner,
    describe,
    rss_kb,
)
from client.jobs import new_jid

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
GRACE = 25.0  # seconds running jobs get to finish once the worker must terminate
HEARTBEAT = 15.0  # seconds between BEATs (the broker forgets a worker after 60 s)
REPORT_TIMEOUT = 5.0  # seconds after the grace to deliver the last ACKs and FAILs
RANK: dict[WorkerState, int] = {"running": 0, "quiet": 1, "terminate": 2}


class Worker:
    """Runs the functions registered for job types, `concurrency` jobs at a time.

    Sync functions run in threads, async functions as trio tasks (or, with
    `async_backend="asyncio"`, on one asyncio loop in its own thread). Queues are fetched in
    priority order. ACKs and FAILs whose connection broke are sent again on a new one, so a
    broker restart or a network drop loses no job.
    """

    def __init__(
        self,
        url: str | None = None,
        queues: Iterable[str] = ("default",),
        concurrency: int = 10,
        *,
        password: str | None = None,
        grace: float = GRACE,
        heartbeat: float = HEARTBEAT,
        labels: Iterable[str] = ("python",),
        middleware: Iterable[Middleware] = (),
        ssl_context: ssl.SSLContext | None = None,
        async_backend: Literal["trio", "asyncio"] = "trio",
    ) -> None:
        self.url = url
        self.password = password
        self.queues = tuple(queues)
        self.concurrency = concurrency
        self.grace = grace
        self.heartbeat = heartbeat
        self.labels = tuple(labels)
        self.middleware = list(middleware)
        self.ssl_context = ssl_context
        self.async_backend = async_backend
        self.wid = new_jid()
        self.state: WorkerState = "running"
        self.slots = 0  # slots fetching or running a job; 0 once quiet and drained
        self.functions: dict[str, JobFunction] = {}
        self._token: trio.lowlevel.TrioToken | None = None

    # -- registration ---------------------------------------------------------------------

    def register(self, jobtype: str, fn: Callable[..., Any]) -> None:
        """Run `fn(*args)` for jobs of `jobtype`."""
        self.functions[jobtype] = JobFunction.of(fn)

    def job(self, jobtype: str | None = None) -> Callable[[F], F]:
        """Decorator: register the function for `jobtype` (default: the function's name)."""

        def decorate(fn: F) -> F:
            self.register(jobtype or fn.__name__, fn)
            return fn

        return decorate

    def use(self, middleware: Middleware) -> Middleware:
        """Add a middleware (usable as a decorator); the first added is the outermost."""
        self.middleware.append(middleware)
        return middleware

    # -- control --------------------------------------------------------------------------

    def run(self) -> None:
        """Work until told to stop (signal or broker), then return after a clean shutdown."""
        main = threading.current_thread() is threading.main_thread()
        trio.run(functools.partial(self.arun, handle_signals=main))

    def quiet(self) -> None:
        """Stop fetching new jobs (from any thread)."""
        self._soon(self._move, "quiet")

    def terminate(self) -> None:
        """Stop fetching, finish or fail running jobs, and return from run() (any thread)."""
        self._soon(self._move, "terminate")

    def _soon(self, fn: Callable[..., None], *args: Any) -> None:
        if self._token is None:
            raise RuntimeError("the worker is not running")
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    def _move(self, state: WorkerState) -> None:
        """Move the state forward only; tell the broker at once."""
        if RANK[state] <= RANK[self.state]:
            if state == "terminate":
                self._forced.set()  # asked twice: no more grace
            return
        log.info("worker %s: %s", self.wid, state)
        self.state = state
        self._stopping.set()
        if state == "terminate":
            self._terminating.set()
        self._beat_now.set()

    # -- running --------------------------------------------------------------------------

    async def arun(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`run()` for trio programs; `handle_signals` traps TSTP, TERM and INT.

        With `nursery.start(worker.arun)`, returns once the broker has registered the worker.
        """
        self._token = trio.lowlevel.current_trio_token()
        self._stopping = trio.Event()
        self._terminating = trio.Event()
        self._forced = trio.Event()
        self._beat_now = trio.Event()
        self._jobs: dict[str, trio.CancelScope] = {}
        self.client = AsyncClient(
            self.url,
            self.password,
            wid=self.wid,
            labels=self.labels,
            retry_for=0,
            ssl_context=self.ssl_context,
        )
        asyncio_thread = AsyncioThread() if self.async_backend == "asyncio" else None
        self._runner = Runner(
            self.functions, self.middleware, trio.CapacityLimiter(self.concurrency), asyncio_thread
        )
        try:
            async with trio.open_nursery() as outer:
                if handle_signals:
                    await outer.start(self._watch_signals)
                await self._register()
                outer.start_soon(self._beat_loop)
                task_status.started()
                log.info(
                    "worker %s: %d slots on queues %s, jobtypes %s",
                    self.wid,
                    self.concurrency,
                    ",".join(self.queues),
                    ",".join(self.functions) or "(none)",
                )
                async with trio.open_nursery() as slots:
                    outer.start_soon(self._enforce_grace, slots.cancel_scope)
                    for _ in range(self.concurrency):
                        slots.start_soon(self._slot)
                await self._terminating.wait()
                outer.cancel_scope.cancel()
        finally:
            await self.client.aclose()
            if asyncio_thread is not None:
                asyncio_thread.close()
            self._token = None
        log.info("worker %s: stopped", self.wid)

    async def _register(self) -> None:
        """Say HELLO and a first BEAT, waiting for the broker if it is not up yet."""
        backoff = Backoff()
        while not self._terminating.is_set():
            try:
                self._follow(await self.client.beat(rss_kb=rss_kb()))
                return
            except ConnectionLost as exc:
                if backoff.attempts == 1:
                    log.warning("worker %s: waiting for the broker: %s", self.wid, exc)
                await self._pause(backoff.delay(exc), self._terminating)

    async def _slot(self) -> None:
        self.slots += 1
        try:
            await self._fetch_and_perform()
        finally:
            self.slots -= 1

    async def _fetch_and_perform(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                job = await self.client.fetch(*self.queues)
            except AuthenticationError:
                raise
            except ClientError as exc:
                log.warning("worker %s: fetch failed: %s", self.wid, exc)
                await self._pause(backoff.delay(exc), self._stopping)
                continue
            backoff.reset()
            if job is not None:
                await self._perform(job)

    async def _perform(self, job: Job) -> None:
        scope = self._jobs[job.jid] = trio.CancelScope()
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            with scope:
                await self._runner.run(job)
        except Exception as exc:
            error = exc
        finally:
            del self._jobs[job.jid]
        if scope.cancelled_caught:
            error = Interrupted(f"worker stopped before the job finished (grace {self.grace} s)")
        await self._report(job, error)
        duration = time.perf_counter() - started
        outcome = "done" if error is None else "failed"
        fields = {"jid": job.jid, "jobtype": job.jobtype, "duration": duration, "outcome": outcome}
        if error is None:
            log.info("job %s %s done in %.3f s", job.jobtype, job.jid, duration, extra=fields)
        else:
            log.warning(
                "job %s %s failed in %.3f s: %s: %s",
                job.jobtype,
                job.jid,
                duration,
                type(error).__name__,
                error,
                extra=fields,
            )

    async def _report(self, job: Job, error: BaseException | None) -> None:
        """ACK or FAIL the job, on new connections as long as it takes (or until forced out)."""
        backoff = Backoff()
        while True:
            try:
                if error is None:
                    await self.client.ack(job.jid)
                else:
                    await self.client.fail(job.jid, *describe(error))
                return
            except ConnectionLost as exc:
                if backoff.attempts == 1:
                    log.warning("worker %s: cannot report %s yet: %s", self.wid, job.jid, exc)
                await trio.sleep(backoff.delay(exc))
            except ServerError as exc:
                log.warning("worker %s: broker refused report of %s: %s", self.wid, job.jid, exc)
                return

    async def _enforce_grace(self, slots: trio.CancelScope) -> None:
        """Once terminating: after the grace, interrupt running jobs; later, abandon reports."""
        await self._terminating.wait()
        await self._pause(self.grace, self._forced)
        if self._jobs:
            log.warning("worker %s: interrupting %d running jobs", self.wid, len(self._jobs))
        for scope in list(self._jobs.values()):
            scope.cancel()
        await trio.sleep(REPORT_TIMEOUT)
        slots.cancel()

    async def _beat_loop(self) -> None:
        while True:
            await self._pause(self.heartbeat, self._beat_now)
            self._beat_now = trio.Event()
            current = "" if self.state == "running" else self.state
            try:
                self._follow(await self.client.beat(current, rss_kb()))
            except ClientError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.wid, exc)

    def _follow(self, state: WorkerState) -> None:
        if RANK[state] > RANK[self.state]:
            self._move(state)

    async def _watch_signals(self, task_status: trio.TaskStatus[None]) -> None:
        wanted = (signal.SIGTSTP, signal.SIGTERM, signal.SIGINT)
        with trio.open_signal_receiver(*wanted) as signals:
            task_status.started()
            async for signum in signals:
                self._move("quiet" if signum == signal.SIGTSTP else "terminate")

    @staticmethod
    async def _pause(seconds: float, until: trio.Event) -> None:
        """Sleep `seconds` or until the event is set."""
        with trio.move_on_after(seconds):
            await until.wait()
