"""Batches (Faktory Enterprise): jobs pushed as a group, and callback jobs once they ran.

    with client.batch(description="import", success=make_job("Imported", [42])) as batch:
        batch.push("import_row", [1])           # custom.bid set for you
        with batch.batch(complete=make_job("PartDone")) as child:   # a child batch
            child.push("import_row", [2])
    # BATCH COMMIT here, on a clean exit; not when the block raised (as Enterprise's clients
    # do: the broker forgets the uncommitted batch after 30 minutes, its callbacks never run)

`Batch` (sync) and `AsyncBatch` share their state here and run the same sans-IO calls
(commands.batch_*). Inside a job, `batch_id()` names the batch of the running job, and
`callback_bid()` / `callback_parent_bid()` those a callback job was pushed for.
"""

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, Unpack

from hopper_client import commands
from hopper_client.commands import BatchStatus, Call, NewBatch
from hopper_client.errors import BatchNotOpen
from hopper_client.execution import current_job
from hopper_client.jobs import JobOptions, in_batch, make_job
from hopper_client.pipeline import AsyncPipeline, Pipeline
from hopper_client.schema.jobs import Job

if TYPE_CHECKING:
    from hopper_client.aio import AsyncClient
    from hopper_client.client import Client

C = TypeVar("C")  # Client or AsyncClient


def batch_spec(
    description: str = "",
    success: Job | None = None,
    complete: Job | None = None,
    parent_bid: str = "",
) -> NewBatch:
    """What BATCH NEW sends; ValueError without a callback job (the broker needs one)."""
    if success is None and complete is None:
        raise ValueError("a batch needs a success or a complete callback job")
    return NewBatch(
        parent_bid=parent_bid, description=description, success=success, complete=complete
    )


class BatchBase(Generic[C]):
    """A batch's state: made (BATCH NEW) or reopened (BATCH OPEN) by `open()`, then committed.

    A batch from `client.batch(...)` is new until opened; one from `client.open_batch(bid)`
    is opened with BATCH OPEN. After `commit()`, `open()` reopens it (BATCH OPEN) to add jobs.
    """

    def __init__(self, client: C, *, bid: str = "", spec: NewBatch | None = None) -> None:
        self.client = client
        self._spec = spec  # None once BATCH NEW answered (or for a batch reopened by bid)
        self._bid = bid
        self._open = False
        self.committed = False

    @property
    def bid(self) -> str:
        """The batch's id; BatchNotOpen before BATCH NEW answered."""
        if not self._bid:
            raise BatchNotOpen("the batch has no bid before it is opened")
        return self._bid

    def __repr__(self) -> str:
        state = "committed" if self.committed else "open" if self._open else "not open"
        return f"<{type(self).__name__} {self._bid or '(new)'} {state}>"

    def _open_call(self) -> Call[str]:
        if self._spec is not None:
            return commands.batch_new(self._spec)
        return commands.batch_open(self.bid)

    def _opened(self, bid: str) -> None:
        self._bid, self._spec, self._open, self.committed = bid, None, True, False

    def _usable(self) -> str:
        """The bid of a batch jobs may be pushed into (opened, not committed)."""
        if self.committed:
            raise BatchNotOpen(f"batch {self._bid} is committed: open() it again to add jobs")
        if not self._open:
            raise BatchNotOpen("open the batch first (a with block, or open())")
        return self._bid

    def _committed(self) -> None:
        self._open, self.committed = False, True

    def _must_open(self) -> bool:
        return not self._open

    def _child(self, description: str, success: Job | None, complete: Job | None) -> NewBatch:
        return batch_spec(description, success, complete, parent_bid=self._usable())


class Batch(BatchBase["Client"]):
    """A batch for blocking code, from `Client.batch()` or `Client.open_batch()`.

    `with` opens it (BATCH NEW, or BATCH OPEN) and commits it when the block ends without an
    exception. Jobs pushed through it (`push`, `push_job`, `push_bulk`, `pipeline()`) carry
    its bid in `custom.bid`; `batch()` makes a child batch.
    """

    client: "Client"

    def open(self) -> Self:
        """BATCH NEW for a new batch, else BATCH OPEN (e.g. to add jobs after a commit)."""
        self._opened(self.client._call(self._open_call()))
        return self

    def push(
        self,
        jobtype: str,
        args: Iterable[Any] = (),
        *,
        wait: float = 0.0,
        **options: Unpack[JobOptions],
    ) -> str:
        """Push a job into the batch (options as `make_job`'s); returns its jid."""
        return self.push_job(make_job(jobtype, args, **options), wait=wait)

    def push_job(self, job: Job, wait: float = 0.0) -> str:
        """Push a job built with `make_job` into the batch (as `Client.push_job`)."""
        return self.client.push_job(in_batch(job, self._usable()), wait=wait)

    def push_bulk(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push jobs into the batch in PUSHB lines; returns {jid: error} of the refused."""
        with self.pipeline() as pipe:
            pipe.push_bulk(jobs)
        return pipe.refused

    def pipeline(self) -> Pipeline:
        """A pipeline (see `Client.pipeline()`) whose jobs join this batch."""
        return Pipeline(self.client, bid=self._usable())

    def batch(
        self,
        *,
        description: str = "",
        success: Job | None = None,
        complete: Job | None = None,
    ) -> "Batch":
        """A child batch: this one's callbacks wait for the child's (use it in a `with`)."""
        return Batch(self.client, spec=self._child(description, success, complete))

    def commit(self) -> None:
        """BATCH COMMIT: the callbacks may fire once every job ran."""
        self.client._call(commands.batch_commit(self._usable()))
        self._committed()

    def status(self) -> BatchStatus:
        """BATCH STATUS of this batch."""
        return self.client._call(commands.batch_status(self.bid))

    def __enter__(self) -> Self:
        return self.open() if self._must_open() else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self.committed:
            self.commit()


class AsyncBatch(BatchBase["AsyncClient"]):
    """`Batch` for async code, from `AsyncClient.batch()` or `AsyncClient.open_batch()`:
    the same, awaited; `async with` opens it and commits it on a clean exit."""

    client: "AsyncClient"

    async def open(self) -> Self:
        """BATCH NEW for a new batch, else BATCH OPEN (e.g. to add jobs after a commit)."""
        self._opened(await self.client._call(self._open_call()))
        return self

    async def push(
        self,
        jobtype: str,
        args: Iterable[Any] = (),
        *,
        wait: float = 0.0,
        **options: Unpack[JobOptions],
    ) -> str:
        """Push a job into the batch (options as `make_job`'s); returns its jid."""
        return await self.push_job(make_job(jobtype, args, **options), wait=wait)

    async def push_job(self, job: Job, wait: float = 0.0) -> str:
        """Push a job built with `make_job` into the batch (as `AsyncClient.push_job`)."""
        return await self.client.push_job(in_batch(job, self._usable()), wait=wait)

    async def push_bulk(self, jobs: Iterable[Job]) -> dict[str, str]:
        """Push jobs into the batch in PUSHB lines; returns {jid: error} of the refused."""
        async with self.pipeline() as pipe:
            await pipe.push_bulk(jobs)
        return pipe.refused

    def pipeline(self) -> AsyncPipeline:
        """A pipeline (see `AsyncClient.pipeline()`) whose jobs join this batch."""
        return AsyncPipeline(self.client, bid=self._usable())

    def batch(
        self,
        *,
        description: str = "",
        success: Job | None = None,
        complete: Job | None = None,
    ) -> "AsyncBatch":
        """A child batch: this one's callbacks wait for the child's (use it in `async with`)."""
        return AsyncBatch(self.client, spec=self._child(description, success, complete))

    async def commit(self) -> None:
        """BATCH COMMIT: the callbacks may fire once every job ran."""
        await self.client._call(commands.batch_commit(self._usable()))
        self._committed()

    async def status(self) -> BatchStatus:
        """BATCH STATUS of this batch."""
        return await self.client._call(commands.batch_status(self.bid))

    async def __aenter__(self) -> Self:
        return await self.open() if self._must_open() else self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and not self.committed:
            await self.commit()


def _custom(job: Job | None, key: str) -> str | None:
    if job is None:
        try:
            job = current_job()
        except LookupError:
            return None
    value = (job.custom or {}).get(key)
    return value if isinstance(value, str) and value else None


def batch_id(job: Job | None = None) -> str | None:
    """The batch the running job (or `job`) belongs to, its `custom.bid`; None when it
    belongs to none, or outside a job. Reopen it to add jobs: `client.open_batch(bid)`."""
    return _custom(job, "bid")


def callback_bid(job: Job | None = None) -> str | None:
    """The batch a callback job (success or complete) was pushed for, its `custom._bid`;
    None for a job that is not a callback, or outside a job."""
    return _custom(job, "_bid")


def callback_parent_bid(job: Job | None = None) -> str | None:
    """The parent of the batch a callback job was pushed for (`custom._pbid`): a child
    batch's callback may reopen its parent to add jobs. None for a top-level batch."""
    return _custom(job, "_pbid")
