"""An asyncio event loop in its own thread, for async job functions written for asyncio."""

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio


class AsyncioThread:
    """Runs coroutines on one asyncio loop in a daemon thread; awaited from trio."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="hopper-asyncio", daemon=True
        )
        self._thread.start()

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run `fn(*args)` on the asyncio loop and return its result; cancelling the caller
        cancels the coroutine."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        async def call() -> Any:
            return await fn(*args)

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    def close(self) -> None:
        """Stop the loop and wait for its thread (running coroutines are dropped)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
