"""Lone commands of connections served together, run with one manager call.

A one-command-at-a-time client sends a PUSH and waits; ten such clients make ten PUSHes that
arrive in the same pass of trio's scheduler, each its own script call. A `Gathering` lets the
first of them lead: it yields once, so every other ready connection task runs its step, and
those that bring a request of the same kind follow it instead of calling the manager. The
leader then runs every request with one call and hands each follower its own result (or the
call's exception). After LONELY leaders in a row found no company, requests run at once,
probing again every PROBE_EVERY-th, so a lone client does not pay for the extra step. The
leader's call is shielded from cancellation (it carries the others' requests): Commands gathers
only the plain path, without middleware, whose calls Redis's timeout bounds.
"""

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")
R = TypeVar("R")
LONELY = 4  # leaders in a row without company after which requests run alone, but for
PROBE_EVERY = 16  # every this many-th, which leads again


class _Follower(Generic[T, R]):
    """A request that another task's call runs: it parks until that call settles it."""

    __slots__ = ("error", "item", "result", "task")

    def __init__(self, item: T) -> None:
        self.item = item
        self.task: trio.lowlevel.Task | None = None
        self.result: R | None = None
        self.error: BaseException | None = None

    async def wait(self) -> R:
        self.task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self.task = None  # its connection went: its request still runs, the result is dropped
        return trio.lowlevel.Abort.SUCCEEDED

    def settle(self, result: R | None, error: BaseException | None) -> None:
        if self.task is not None:
            self.result, self.error = result, error
            trio.lowlevel.reschedule(self.task)


class Gathering(Generic[T, R]):
    """Runs requests of one kind from tasks ready at the same time with one call of `run`,
    which takes the requests in order and returns one result for each."""

    def __init__(self, run: Callable[[list[T]], Awaitable[list[R]]]) -> None:
        self._run = run
        self._followers: list[_Follower[T, R]] | None = None  # while a leader gathers
        self._lonely = 0  # leaders in a row that found no company
        self._alone = 0  # requests run alone since the last leader
        self.led = 0  # gatherings led so far

    async def one(self, item: T) -> R:
        """Run one request, together with those of other tasks ready now: its result."""
        if self._followers is not None:
            follower: _Follower[T, R] = _Follower(item)
            self._followers.append(follower)
            return await follower.wait()
        if self._lonely >= LONELY and self._alone < PROBE_EVERY:
            self._alone += 1
            return (await self._run([item]))[0]
        return await self._lead(item)

    async def _lead(self, item: T) -> R:
        followers: list[_Follower[T, R]] = []
        self._followers = followers
        try:
            await trio.lowlevel.cancel_shielded_checkpoint()  # the other ready tasks step
        finally:
            self._followers = None
        self._lonely = 0 if followers else self._lonely + 1
        self._alone = 0
        self.led += 1
        try:
            with trio.CancelScope(shield=True):  # the followers' requests ride on this call
                results = await self._run([item, *(f.item for f in followers)])
        except BaseException as exc:
            for follower in followers:
                follower.settle(None, exc)
            raise
        for follower, own in zip(followers, results[1:], strict=True):
            follower.settle(own, None)
        return results[0]
