"""`Worker`: the jobs a process runs and how; `run()` works a shift (see shift.py).

Life cycle (the protocol's): running -> quiet (stop fetching, keep beating) -> terminate (stop
fetching, give running jobs `grace` seconds, FAIL the rest so they are retried soon, exit).
TSTP means quiet and TERM/INT terminate (a second TERM/INT skips the grace); the broker can
ask for either in its reply to BEAT.
"""

import contextlib
import functools
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

import trio

from hopper_client.commands import WorkerState
from hopper_client.execution import JobFunction, Middleware
from hopper_client.jobs import new_jid
from hopper_client.shift import Shift

F = TypeVar("F", bound=Callable[..., Any])
GRACE = 25.0  # seconds running jobs get to finish once the worker must terminate
HEARTBEAT = 15.0  # seconds between BEATs (a worker silent for 60 s is lost, its jobs failed)


class Worker:
    """Runs the functions registered for job types, `concurrency` jobs at a time.

    Sync functions run in threads, async functions as trio tasks (or, with
    `async_backend="asyncio"`, on one asyncio loop in its own thread). Queues are fetched in
    priority order; while jobs run short (under 10 ms on average), up to `prefetch` more
    (default: `concurrency`) are fetched ahead of free slots, 0 turns that off. ACKs and
    FAILs whose connection broke are sent again on a new one, so a broker restart or a
    network drop loses no job. Each BEAT lists the jobs the worker holds; those the broker
    drops (cancelled, reservation lost) are stopped: async ones cancelled, sync ones told
    (`job_cancelled()`). A job's `custom.timeout` is its deadline (DeadlineExceeded), and
    `raise Snooze(seconds)` hands a job back for later. Settings may change until `run()`.
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
        prefetch: int | None = None,
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
        self.prefetch = prefetch
        self.wid = new_jid()
        self.functions: dict[str, JobFunction] = {}
        self._shift: Shift | None = None
        self._token: trio.lowlevel.TrioToken | None = None

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

    @property
    def state(self) -> WorkerState:
        """running, quiet or terminate (of the current or last run)."""
        return "running" if self._shift is None else self._shift.state

    @property
    def active_slots(self) -> int:
        """Slots fetching or running a job; 0 once a quiet worker has drained."""
        return 0 if self._shift is None else self._shift.active_slots

    def run(self) -> None:
        """Work until told to stop (signal or broker), then return after a clean shutdown."""
        main = threading.current_thread() is threading.main_thread()
        trio.run(functools.partial(self.arun, handle_signals=main))

    async def arun(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`run()` for trio programs; `handle_signals` traps TSTP, TERM and INT.

        With `nursery.start(worker.arun)`, returns once the broker has registered the worker.
        """
        self._shift = Shift(self)
        self._token = trio.lowlevel.current_trio_token()
        try:
            await self._shift.run(handle_signals, task_status)
        finally:
            self._token = None

    def quiet(self) -> None:
        """Stop fetching new jobs (from any thread)."""
        self._soon(lambda shift: shift.move("quiet"))

    def terminate(self) -> None:
        """Stop fetching, finish or fail running jobs, return from run(); again: no grace."""
        self._soon(Shift.terminate)

    def _soon(self, action: Callable[[Shift], None]) -> None:
        shift, token = self._shift, self._token
        if shift is None or token is None:
            raise RuntimeError("the worker is not running")
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(action, shift)
