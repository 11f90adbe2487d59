"""Threads for sync job functions: a fixed pool fed from a queue, results handed back in batches.

A result wakes trio only when none is already waiting to be handed back, so many jobs ending
together cost one wake-up (`trio.to_thread` pays a thread hand-off and a wake-up per call).
"""

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

import outcome
import trio
from trio._threads import PARENT_TASK_DATA


class _Call:
    """One function call on its way through the pool."""

    __slots__ = ("abandoned", "args", "context", "fn", "task")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()
        self.task = trio.lowlevel.current_task()
        self.abandoned = False


class ThreadPool:
    """Up to `size` daemon threads, started as needed, running calls from trio tasks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._token = trio.lowlevel.current_trio_token()
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[tuple[_Call, outcome.Outcome[Any]]] = []
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for a call

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a thread, in the caller's context; cancelling abandons the thread."""
        call = _Call(fn, args)
        with self._lock:
            start = self._idle <= 0 and len(self._threads) < self.size
            self._idle -= not start
        if start:
            thread = threading.Thread(target=self._serve, name="hopper-job", daemon=True)
            self._threads.append(thread)
            thread.start()
        self._calls.put(call)

        def abandon(_: Any) -> trio.lowlevel.Abort:
            call.abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abandon)

    def close(self) -> None:
        """Let idle threads end (abandoned ones end when their call returns)."""
        for _ in self._threads:
            self._calls.put(None)

    def _serve(self) -> None:
        # What trio.to_thread gives its threads, so that job functions may call
        # trio.from_thread.run/run_sync without a token (trio's own thread-local; trio is
        # pinned, and tests/test_client_security.py uses it).
        PARENT_TASK_DATA.token = self._token
        PARENT_TASK_DATA.abandon_on_cancel = True
        PARENT_TASK_DATA.cancel_register = [None]
        PARENT_TASK_DATA.task_register = [None]
        while (call := self._calls.get()) is not None:
            if call.abandoned:  # interrupted before it began: it must not run
                with self._lock:
                    self._idle += 1
                continue
            result = outcome.capture(call.context.run, call.fn, *call.args)
            with self._lock:
                self._done.append((call, result))
                first = len(self._done) == 1
                self._idle += 1
            if first:
                try:
                    self._token.run_sync_soon(self._hand_back)
                except trio.RunFinishedError:
                    return

    def _hand_back(self) -> None:
        with self._lock:
            done, self._done = self._done, []
        for call, result in done:
            if not call.abandoned:
                trio.lowlevel.reschedule(call.task, result)
