"""Threads for sync job functions: a fixed pool fed from a queue, results handed back in batches.

A call abandoned while it runs (its job interrupted or past its deadline: a thread cannot be
killed) takes its thread out of the pool, which may start another in its place; the thread
ends when the call returns.

Work wakes a thread only when none is already free to take it, and a thread that takes a call
while more wait wakes the next one: quick calls run one after another on a thread or two,
blocking ones spread over the pool. A result wakes trio only when none is already waiting to
be handed back, so many jobs ending together cost one wake-up (`trio.to_thread` pays a thread
hand-off and a wake-up per call).
"""

import collections
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import outcome
import trio
from trio._threads import PARENT_TASK_DATA


class _Call:
    """One function call on its way through the pool."""

    __slots__ = ("abandoned", "args", "context", "fn", "orphaned", "running", "task")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.context = contextvars.copy_context()
        self.task = trio.lowlevel.current_task()
        self.abandoned = False
        self.running = False  # a thread has taken it and not finished it
        self.orphaned = False  # abandoned while running: its thread left the pool


class ThreadPool:
    """Up to `size` daemon threads, started as needed, running calls from trio tasks."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()  # guards everything below
        self._calls: collections.deque[_Call] = collections.deque()
        self._parked: list[threading.Lock] = []  # idle threads, each blocked on its own lock
        self._free = 0  # threads awake and not in a call: they will look at `_calls`
        self._threads = 0
        self._closed = False
        self._done: list[tuple[_Call, outcome.Outcome[Any]]] = []
        self._handing_back = False  # `_hand_back` is scheduled in trio and has not run yet

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a thread, in the caller's context; cancelling abandons the thread."""
        call = _Call(fn, args)
        with self._lock:
            self._calls.append(call)
            self._wake_one()

        def abandon(_: Any) -> trio.lowlevel.Abort:
            with self._lock:
                call.abandoned = True
                if call.running:  # its thread leaves the pool: another may be started
                    call.orphaned = True
                    self._threads -= 1
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abandon)

    def close(self) -> None:
        """Let the threads end (one in a call ends when the call returns)."""
        with self._lock:
            self._closed = True
            for parked in self._parked:
                parked.release()
            self._parked.clear()

    def _wake_one(self) -> None:
        """With the lock held: have a thread look at the calls, unless one is free already."""
        if self._free:
            return
        if self._parked:
            self._parked.pop().release()
        elif self._threads < self.size:
            self._threads += 1
            threading.Thread(target=self._serve, name="hopper-job", daemon=True).start()
        else:
            return
        self._free += 1

    def _serve(self) -> None:
        # What trio.to_thread gives its threads, so that job functions may call
        # trio.from_thread.run/run_sync without a token (trio's own thread-local; trio is
        # pinned, and tests/test_client_security.py uses it).
        PARENT_TASK_DATA.token = self._token
        PARENT_TASK_DATA.abandon_on_cancel = True
        PARENT_TASK_DATA.cancel_register = [None]
        PARENT_TASK_DATA.task_register = [None]
        parking = threading.Lock()
        call: _Call | None = None  # the call this thread just took
        result: outcome.Outcome[Any] | None = None  # its outcome (None: it was abandoned)
        while True:
            with self._lock:
                if call is not None:
                    call.running = False
                    if call.orphaned:
                        return
                    self._free += 1
                    if result is not None:
                        self._done.append((call, result))
                if self._closed:
                    return
                call = self._calls.popleft() if self._calls else None
                self._free -= 1
                if call is not None:
                    call.running = not call.abandoned
                if call is None:
                    parking.acquire()
                    self._parked.append(parking)
                elif self._calls:
                    self._wake_one()
                # Results go back now, unless a free thread will look again (it hands them
                # back when it finds no call): quick calls in a row are handed back together.
                hand_back = bool(self._done) and not self._handing_back
                hand_back &= call is None or not self._free
                self._handing_back |= hand_back
            if hand_back:
                try:
                    self._token.run_sync_soon(self._hand_back)
                except trio.RunFinishedError:
                    return
            if call is None:
                parking.acquire()  # until `_wake_one` or `close` releases it
                parking.release()
            else:  # one interrupted before it began must not run
                run = not call.abandoned
                result = outcome.capture(call.context.run, call.fn, *call.args) if run else None

    def _hand_back(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._handing_back = False
        for call, result in done:
            if not call.abandoned:
                trio.lowlevel.reschedule(call.task, result)
