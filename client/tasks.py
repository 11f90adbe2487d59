"""Task objects: a job type declared once, with its defaults, pushed with checked arguments.

    jobs = Tasks()

    @jobs.task(queue="critical", retry=5)
    def send_welcome(email: str) -> None: ...

    send_welcome.push("ada@example.com")         # producers
    jobs.worker().run()                          # workers: every task of the registry

A task is pushed as an ordinary job (jobtype = the function's name unless `name=` says
otherwise, args = the positional arguments), so jobs pushed by `client.push` or by other
languages reach the same functions.
"""

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, Unpack, cast

import msgspec
import trio

from hopper_client.aio import AsyncClient
from hopper_client.client import Client
from hopper_client.execution import running_job
from hopper_client.jobs import At, JobOptions, make_job
from hopper_client.schema.jobs import DEFAULT_QUEUE, Job
from hopper_client.tracing import continue_trace, inject
from hopper_client.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")
Pushed = Callable[[Job], None]

_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.VAR_POSITIONAL,
)


class Task(Generic[P, R]):
    """A function registered as a job type, with the options its jobs are pushed with.

    Calling the task calls the function; `push(...)` takes the function's arguments, checks
    them against its signature (TypeError in the producer) and pushes a job.
    """

    def __init__(self, tasks: "Tasks", fn: Callable[P, R], jobtype: str, options: JobOptions):
        try:
            make_job(jobtype, (), **options)  # bad options fail here, not at each push
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"task {jobtype}: {exc}") from None
        self.tasks = tasks
        self.fn = fn
        self.jobtype = jobtype
        self.defaults = options
        self.signature = inspect.signature(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Task {self.jobtype} {dict(self.defaults)}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def options(self, **options: Unpack[JobOptions]) -> "Task[P, R]":
        """This task with some options changed, for the pushes made through it."""
        return Task(self.tasks, self.fn, self.jobtype, {**self.defaults, **options})

    def arguments(self, *args: P.args, **kwargs: P.kwargs) -> list[Any]:
        """The job's args for a call with these arguments; TypeError if they do not fit."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.jobtype}: {exc}") from None
        if bound.kwargs:  # a parameter after a skipped default: send the defaults too
            bound.apply_defaults()
        return list(bound.args)

    def make(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """The job `push` would push (with a new jid)."""
        options: JobOptions = {**self.defaults, "custom": inject(self.defaults.get("custom"))}
        return make_job(self.jobtype, self.arguments(*args, **kwargs), **options)

    def push(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """Push a job that calls the function with these arguments; returns its jid."""
        job = self.make(*args, **kwargs)
        if self.tasks.eager:
            self.tasks.run_eagerly(job)
        else:
            self.tasks.client.push_job(job)
        self.tasks.pushed(job)
        return job.jid

    def push_at(self, at: At, *args: P.args, **kwargs: P.kwargs) -> str:
        """`push`, run at `at` (a datetime, a timedelta delay or RFC3339 text)."""
        return self.options(at=at).push(*args, **kwargs)

    async def apush(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """`push` for async code (asyncio or trio)."""
        job = self.make(*args, **kwargs)
        if self.tasks.eager:
            await self.tasks.arun_eagerly(job)
        else:
            await self.tasks.async_client.push_job(job)
        self.tasks.pushed(job)
        return job.jid

    async def apush_at(self, at: At, *args: P.args, **kwargs: P.kwargs) -> str:
        """`push_at` for async code (asyncio or trio)."""
        return await self.options(at=at).apush(*args, **kwargs)


class Tasks:
    """A registry of tasks, imported by the producers and the workers of an application.

    `url`/`password` name the broker (None: HOPPER_URL, FAKTORY_URL or localhost); `queues`
    are the queues its worker fetches, highest priority first (default: the tasks' queues in
    the order they were declared). With `eager` true, `push` runs the function at once in
    the caller (tests); its exception propagates.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        password: str | None = None,
        queues: Iterable[str] | None = None,
        eager: bool = False,
    ) -> None:
        self.url = url
        self.password = password
        self.queues = None if queues is None else tuple(queues)
        self.eager = eager
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.watchers: list[Pushed] = []
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._async_clients: dict[object, AsyncClient] = {}  # by event loop

    def task(
        self, *, name: str | None = None, **options: Unpack[JobOptions]
    ) -> Callable[[Callable[P, R]], Task[P, R]]:
        """Decorator: declare a task, `@jobs.task()` or `@jobs.task(queue=..., retry=...)`.

        The options are those of `make_job` (queue, retry, reserve_for, priority, timeout,
        group, custom, ...); `name` is the jobtype (default: the function's name).
        """

        def declare(fn: Callable[P, R]) -> Task[P, R]:
            jobtype = name or fn.__name__
            _check_parameters(jobtype, fn)
            if jobtype in self.tasks:
                raise ValueError(f"a task named {jobtype!r} is already declared")
            task = Task(self, fn, jobtype, options)
            self.tasks[jobtype] = task
            return task

        return declare

    @property
    def client(self) -> Client:
        """The blocking client that `push` uses (made on first use; thread-safe)."""
        with self._lock:
            if self._client is None:
                self._client = Client(self.url, self.password)
            return self._client

    @property
    def async_client(self) -> AsyncClient:
        """The async client that `apush` uses in the running event loop (one per loop, made on
        first use; those of finished loops are dropped)."""
        loop = _running_loop()
        with self._lock:
            client = self._async_clients.get(loop)
            if client is None:
                self._async_clients = {
                    key: kept for key, kept in self._async_clients.items() if not _finished(key)
                }
                client = self._async_clients[loop] = AsyncClient(self.url, self.password)
            return client

    def connect(self, url: str | None = None, password: str | None = None) -> None:
        """Push to another broker from now on (closes the clients made so far)."""
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            self._async_clients = {}
            self.url, self.password = url, password

    def worker(self, **settings: Any) -> Worker:
        """A Worker that runs every task of this registry and continues the producers'
        traces; `settings` are Worker's (url, queues, concurrency, ...)."""
        settings.setdefault("url", self.url)
        settings.setdefault("password", self.password)
        settings.setdefault("queues", self.queues or self._declared_queues())
        worker = Worker(**settings)
        worker.middleware.insert(0, continue_trace)
        for jobtype, task in self.tasks.items():
            worker.register(jobtype, task.fn)
        return worker

    def _declared_queues(self) -> tuple[str, ...]:
        queues = [task.defaults.get("queue", DEFAULT_QUEUE) for task in self.tasks.values()]
        return tuple(dict.fromkeys(queues)) or (DEFAULT_QUEUE,)

    def pushed(self, job: Job) -> None:
        """Tell the watchers (e.g. the pytest plugin) about a job pushed through a task."""
        for watch in list(self.watchers):
            watch(job)

    def run_eagerly(self, job: Job) -> Any:
        """Run a job's function now, in this thread, on its args as a worker would get them."""
        task, args = self.tasks[job.jobtype], _as_received(job)
        with running_job(job):
            if inspect.iscoroutinefunction(task.fn):
                return trio.run(functools.partial(task.fn, *args))
            return task.fn(*args)

    async def arun_eagerly(self, job: Job) -> Any:
        """`run_eagerly` from async code: an async function is awaited in the caller's loop."""
        task, args = self.tasks[job.jobtype], _as_received(job)
        with running_job(job):
            if inspect.iscoroutinefunction(task.fn):
                return await task.fn(*args)
            return task.fn(*args)


def _check_parameters(jobtype: str, fn: Callable[..., Any]) -> None:
    """A job carries positional args only: refuse functions with keyword-only parameters."""
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind not in _POSITIONAL:
            raise TypeError(
                f"task {jobtype}: parameter {parameter.name!r} is keyword-only, "
                "but a job's args are positional"
            )


def _running_loop() -> object:
    """The running event loop: asyncio's, else trio's token (RuntimeError outside both)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return trio.lowlevel.current_trio_token()


def _finished(loop: object) -> bool:
    """Whether an event loop from `_running_loop` has ended."""
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop.is_closed()
    try:
        cast(trio.lowlevel.TrioToken, loop).run_sync_soon(lambda: None)
    except trio.RunFinishedError:
        return True
    return False


def _as_received(job: Job) -> list[Any]:
    """The job's args after a trip through JSON, as a worker receives them."""
    args: list[Any] = msgspec.json.decode(msgspec.json.encode(job.args or []))
    return args
