"""Middleware chains around the manager's push, fetch, ack and fail steps.

A middleware is `async def mw(ctx, next_)`: it may look at or change `ctx.job`, call `next_()`
to go on, raise `Halt(code, message)` to stop with an error the client sees as `-CODE message`,
or, on fetch only, raise `Discard` to drop the fetched job and fetch the next one.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hopper_client.schema.jobs import Job


@dataclass
class Context:
    """What a middleware sees: the job, the time, and the worker (if any) behind the command."""

    job: Job
    now: float
    wid: str = ""
    values: dict[str, object] = field(default_factory=dict)


Next = Callable[[], Awaitable[None]]
Middleware = Callable[[Context, Next], Awaitable[None]]
Step = Callable[[Context], Awaitable[None]]


async def _nothing(ctx: Context) -> None:
    return None


class Chain:
    """An ordered list of middleware; the first added runs outermost."""

    def __init__(self) -> None:
        self._items: list[Middleware] = []

    def add(self, middleware: Middleware) -> None:
        self._items.append(middleware)

    def __bool__(self) -> bool:
        return bool(self._items)

    async def run(self, ctx: Context, final: Step = _nothing) -> None:
        """Run the chain, then `final` if every middleware called its next."""

        async def call(index: int) -> None:
            if index == len(self._items):
                await final(ctx)
            else:
                await self._items[index](ctx, lambda: call(index + 1))

        await call(0)


@dataclass
class Chains:
    """The four seams where middleware runs."""

    push: Chain = field(default_factory=Chain)
    fetch: Chain = field(default_factory=Chain)
    ack: Chain = field(default_factory=Chain)
    fail: Chain = field(default_factory=Chain)

    def __bool__(self) -> bool:
        """Whether any middleware is installed."""
        return bool(self.push or self.fetch or self.ack or self.fail)
