"""Several awaits at once (on the pipelined Redis connection their calls share one round trip),
failing as one of them would alone."""

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from hopper_client.schema.errors import BrokerError

T = TypeVar("T")


async def each(items: Sequence[T], call: Callable[[T], Awaitable[None]]) -> None:
    """`call(item)` for every item at once. A BrokerError one of them raises (Redis out of
    reach, a refusal) is raised as it is, not in a group, so callers handle it as usual."""
    try:
        async with trio.open_nursery() as nursery:
            for item in items:
                nursery.start_soon(call, item)
    except BaseExceptionGroup as group:
        errors, _ = group.split(BrokerError)
        if errors is None:
            raise
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
