"""One run of a worker: its connections, slots, heartbeat, signals and graceful shutdown."""

import logging
import signal
import ssl
import time
from typing import TYPE_CHECKING

import trio

from broker.errors import JOB_NOT_FOUND
from broker.jobs import Job
from client.aio import AsyncClient
from client.backoff import Backoff
from client.bridge import AsyncioThread
from client.commands import WorkerState
from client.errors import AuthenticationError, ClientError, ConnectionLost, ServerError
from client.execution import Interrupted, Runner, describe, rss_kb

if TYPE_CHECKING:
    from client.worker import Worker

log = logging.getLogger("client.worker")

REPORT_TIMEOUT = 5.0  # seconds after the grace to deliver the last ACKs and FAILs
REFUSED_FOR = 30.0  # seconds to keep reporting a job while the broker answers with errors
RANK: dict[WorkerState, int] = {"running": 0, "quiet": 1, "terminate": 2}


class Shift:
    """Fetches and runs jobs with `worker.concurrency` slots until told to terminate."""

    def __init__(self, worker: "Worker") -> None:
        self.worker = worker
        self.wid = worker.wid
        self.state: WorkerState = "running"
        self.active_slots = 0
        self.client = self._connect(worker.ssl_context)  # HELLO and BEAT
        self._stopping = trio.Event()  # quiet or terminate: fetch no more
        self._terminating = trio.Event()
        self._forced = trio.Event()  # no more grace
        self._beat_now = trio.Event()
        self._jobs: dict[str, trio.CancelScope] = {}

    def _connect(self, ssl_context: ssl.SSLContext | None) -> AsyncClient:
        """A client of this worker's own, with one connection (the loops retry at their pace)."""
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
        self._stopping.set()
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
        limiter = trio.CapacityLimiter(worker.concurrency)
        self._runner = Runner(worker.functions, worker.middleware, limiter, asyncio_thread)
        try:
            async with trio.open_nursery() as outer:
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
                async with trio.open_nursery() as slots:
                    outer.start_soon(self._enforce_grace, slots.cancel_scope)
                    for _ in range(worker.concurrency):
                        slots.start_soon(self._slot)
                await self._terminating.wait()
                outer.cancel_scope.cancel()
        finally:
            await self.client.aclose()
            if asyncio_thread is not None:
                asyncio_thread.close()
        log.info("worker %s: stopped", self.wid)

    async def _register(self) -> None:
        """Say HELLO and a first BEAT, waiting for the broker if it is not up yet."""
        backoff = Backoff()
        while not self._terminating.is_set():
            try:
                self.move(await self.client.beat(rss_kb=rss_kb()))
                return
            except AuthenticationError:
                raise
            except ClientError as exc:
                if backoff.attempts == 1:
                    log.warning("worker %s: waiting for the broker: %s", self.wid, exc)
                await _pause(backoff.delay(exc), self._terminating)

    async def _slot(self) -> None:
        """Fetch and run jobs one at a time; a job's ACK goes over the connection that
        fetched it, where the broker remembers the job."""
        self.active_slots += 1
        client = self._connect(self.client.ssl_context)
        backoff = Backoff()
        try:
            while not self._stopping.is_set():
                try:
                    job = await client.fetch(*self.worker.queues)
                except ClientError as exc:
                    log.warning("worker %s: fetch failed: %s", self.wid, exc)
                    await _pause(backoff.delay(exc), self._stopping)
                    continue
                backoff.reset()
                if job is not None:
                    await self._perform(client, job)
        finally:
            self.active_slots -= 1
            await client.aclose()

    async def _perform(self, client: AsyncClient, job: Job) -> None:
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
            error = Interrupted(f"the worker stopped before the job finished ({self.wid})")
        await self._report(client, job, error)
        duration = time.perf_counter() - started
        fields = {
            "jid": job.jid,
            "jobtype": job.jobtype,
            "duration": duration,
            "outcome": "done" if error is None else "failed",
        }
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
                exc_info=error,
                extra=fields,
            )

    async def _report(self, client: AsyncClient, job: Job, error: BaseException | None) -> None:
        """ACK or FAIL the job: through lost connections as long as it takes (or until forced
        out), through error replies for REFUSED_FOR seconds."""
        lost, refused = Backoff(), Backoff(REFUSED_FOR)
        while True:
            try:
                if error is None:
                    await client.ack(job.jid)
                else:
                    await client.fail(job.jid, *describe(error))
                return
            except ConnectionLost as exc:
                if lost.attempts == 1:
                    log.warning("worker %s: cannot report %s yet: %s", self.wid, job.jid, exc)
                await trio.sleep(lost.delay(exc))
            except ServerError as exc:
                log.warning("worker %s: broker refused report of %s: %s", self.wid, job.jid, exc)
                if exc.message.startswith(JOB_NOT_FOUND.format("")):
                    return  # its reservation expired: the broker has failed it already
                try:
                    await trio.sleep(refused.delay(exc))
                except ServerError:
                    return

    async def _enforce_grace(self, slots: trio.CancelScope) -> None:
        """Once terminating: after the grace, interrupt running jobs; later, abandon reports."""
        await self._terminating.wait()
        await _pause(self.worker.grace, self._forced)
        if self._jobs:
            log.warning("worker %s: interrupting %d running jobs", self.wid, len(self._jobs))
        for scope in list(self._jobs.values()):
            scope.cancel()
        await trio.sleep(REPORT_TIMEOUT)
        slots.cancel()

    async def _beat_loop(self) -> None:
        while True:
            await _pause(self.worker.heartbeat, self._beat_now)
            self._beat_now = trio.Event()
            current = "" if self.state == "running" else self.state
            try:
                self.move(await self.client.beat(current, rss_kb()))
            except ClientError as exc:
                log.warning("worker %s: heartbeat failed: %s", self.wid, exc)
                await self.client.aclose()  # a new connection's HELLO registers the worker again

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
