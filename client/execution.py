"""How one job runs: its registered function, in a thread if it is sync, inside middleware."""

import contextlib
import functools
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple

from hopper_client.bridge import AsyncioThread
from hopper_client.control import Hold, hold_job
from hopper_client.schema.jobs import Job
from hopper_client.threads import ThreadPool

ANY_JOBTYPE = "*"  # registered for it, a function runs the jobs no other function is for
MAX_BACKTRACE = 50  # lines of traceback sent with FAIL (the broker keeps 50)
MAX_MESSAGE = 1000  # characters of a failure's message sent (the broker keeps 1,000)
# Characters of each backtrace line sent: a FAIL stays far below the broker's line limit.
MAX_BACKTRACE_LINE = 1024

Next = Callable[[], Awaitable[None]]
Middleware = Callable[[Job, Next], Awaitable[None]]
"""`async def middleware(job, call_next)`: runs around every job; must await `call_next()`."""

_current_job: ContextVar[Job] = ContextVar("current_job")


def current_job() -> Job:
    """The job being run by this task or thread; LookupError outside a job."""
    return _current_job.get()


@contextlib.contextmanager
def running_job(job: Job) -> Iterator[None]:
    """`current_job()` is `job` inside the block (jobs run outside a worker: eager mode)."""
    token = _current_job.set(job)
    try:
        yield
    finally:
        _current_job.reset(token)


class UnknownJobtype(Exception):
    """No function is registered for the fetched job's jobtype."""


class Interrupted(Exception):
    """The worker stopped before the job finished; the job is failed back to be retried."""


class JobFunction(NamedTuple):
    """A registered function, and whether it is awaited (async) or run in a thread."""

    fn: Callable[..., Any]
    is_async: bool

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> "JobFunction":
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        call = getattr(fn, "__call__", None)  # noqa: B004 -- an object with an async __call__
        return cls(fn, inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call))


class Runner:
    """Runs jobs: sync functions in `threads`, async ones in the task (or on the asyncio loop
    of `asyncio_thread`)."""

    def __init__(
        self,
        functions: Mapping[str, JobFunction],
        middleware: Sequence[Middleware],
        threads: ThreadPool,
        asyncio_thread: AsyncioThread | None = None,
    ) -> None:
        self.functions = functions
        self.middleware = middleware
        self.threads = threads
        self.asyncio_thread = asyncio_thread

    def function(self, job: Job) -> JobFunction | None:
        """The function registered for the job's jobtype, else the one for "*" (any)."""
        return self.functions.get(job.jobtype) or self.functions.get(ANY_JOBTYPE)

    def is_sync(self, job: Job) -> bool:
        """Whether the job's function runs in a thread."""
        entry = self.function(job)
        return entry is not None and not entry.is_async

    async def run(self, job: Job, hold: Hold | None = None) -> Any:
        """Run the job's function and return what it returned (middleware may wrap it, the
        value still comes from the function); its exception propagates. Sets
        `current_job()` and `job_cancelled()` (for the job's task: each job runs in a task
        of its own)."""
        _current_job.set(job)
        if hold is not None:
            hold_job(hold)
        returned: list[Any] = [None]
        call: Next = functools.partial(self._call, job, returned)
        for middleware in reversed(self.middleware):
            call = functools.partial(middleware, job, call)
        await call()
        return returned[0]

    async def _call(self, job: Job, returned: list[Any]) -> None:
        entry = self.function(job)
        if entry is None:
            raise UnknownJobtype(f"no function is registered for jobtype {job.jobtype!r}")
        args = job.args or ()
        if not entry.is_async:
            returned[0] = await self.threads.run(entry.fn, *args)
        elif self.asyncio_thread is not None:
            returned[0] = await self.asyncio_thread.run(entry.fn, *args)
        else:
            returned[0] = await entry.fn(*args)


def describe(error: BaseException) -> tuple[str, str, list[str]]:
    """errtype, message and backtrace lines (the last MAX_BACKTRACE) of a job's exception.

    The backtrace starts at the job's own code: the frames of the worker's machinery (this
    package, trio's threads, futures) that lead to it are left out.
    """
    report = traceback.TracebackException.from_exception(error)
    frames = list(report.stack)
    skip = 0
    while skip < len(frames) - 1 and frames[skip].filename.startswith(_machinery()):
        skip += 1
    report.stack = traceback.StackSummary.from_list(frames[skip:])
    lines = "".join(report.format()).splitlines()[-MAX_BACKTRACE:]
    backtrace = [_cut(line, MAX_BACKTRACE_LINE) for line in lines]
    return type(error).__name__, message_of(error), backtrace


def message_of(error: BaseException) -> str:
    """The exception's text (its repr when empty), even when either of them raises; cut to
    MAX_MESSAGE characters."""
    try:
        text = str(error) or repr(error)
    except Exception:
        text = f"<{type(error).__name__} that cannot be shown>"
    return _cut(text, MAX_MESSAGE)


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


@functools.cache
def _machinery() -> tuple[str, ...]:
    """Directories of the code between the worker and a job function."""
    modules = (__name__.partition(".")[0], "trio", "outcome", "concurrent.futures")
    return tuple(
        os.path.dirname(module.__file__) + os.sep
        for name in modules
        if (module := sys.modules.get(name)) is not None and module.__file__
    )


def rss_kb() -> int:
    """This process's resident memory in KiB (peak memory where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak
