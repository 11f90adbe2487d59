"""Reaching Redis at start: a running connection that answered within redis_start_timeout,
or StartError with the reason (the broker and `hopper check` alike)."""

from collections.abc import Callable

import trio

from hopper_broker.errors import StartError
from hopper_broker.store.cluster import ClusterPipeline, connection_for
from hopper_broker.store.connection import Pipeline


async def reach(
    url: str, nursery: trio.Nursery, timeout: Callable[[], float], start_timeout: float
) -> Pipeline | ClusterPipeline:
    """The connection to `url`, running in `nursery` (`timeout()`: redis_timeout); raises
    StartError when Redis does not answer within `start_timeout` seconds."""
    redis = connection_for(url, timeout)
    with trio.move_on_after(start_timeout) as deadline:
        await nursery.start(redis.run)
    if deadline.cancelled_caught:
        raise StartError(
            f"cannot reach redis at {redis.address.display} within {start_timeout:g}s: "
            f"{redis.last_error or 'no answer'}"
        )
    return redis
