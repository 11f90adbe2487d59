"""What a broker process does when trio's loop has nothing left to run and is about to sleep.

First the pass-end hooks run: each Redis pipeline sends the commands the pass just queued
(store/connection.py). Then, while the loop's waits are short, it waits on the CPU for a
moment (`busy_poll_us`) before it sleeps: a reply that comes meanwhile is taken without a
sleep and a wake-up. On this machine a sleeping process costs the one that wakes it more than
a Redis script call (the send that wakes it takes 10-15 µs of the sender's CPU) and wakes
tens of µs later, so a lone client's command, which waits on Redis and then on the client,
pays both twice; the Go reference server's threads spin before they sleep for the same reason
(docs/benchmarks.md, "Waiting on the CPU before sleeping").

The sockets looked at are those of `RawStream`s (sockets.py: every Redis connection, TLS or not,
and the plain client connections; not TLS client ones), in an epoll set of their own,
level-triggered, so that the spin ends at the first byte that comes. The spin is adaptive: it
runs only when the last wait ended within the budget, so a broker that waits long (idle, or a
trickle of commands) sleeps at once and spends nothing on it. Other wake-ups (a thread's
`run_sync_soon`, a signal, sockets that are not `RawStream`s) do not end a spin: they wait at
most the budget. Where there is no epoll (not Linux), there is no spin.
"""

import contextlib
import select
import socket
import time
from collections.abc import Callable

import trio

_CURRENT: trio.lowlevel.RunVar["LoopIdle"] = trio.lowlevel.RunVar("loop_idle")


class LoopIdle(trio.abc.Instrument):
    """The pass-end hooks and the busy poll of one trio run; `LoopIdle.current()` gives it."""

    def __init__(self) -> None:
        self.budget: Callable[[], float] = lambda: 0.0  # seconds to spin; 0: never (the app's)
        self._hooks: list[Callable[[], bool]] = []
        self._ready = select.epoll() if hasattr(select, "epoll") else None
        self._waiting_since = 0.0
        self._budget = 0.0  # the budget as read for the pass that ended last
        self._short = True  # the last wait ended within the budget

    @classmethod
    def current(cls) -> "LoopIdle":
        """This trio run's instance, installed as an instrument at its first use."""
        try:
            return _CURRENT.get()
        except LookupError:
            idle = cls()
            _CURRENT.set(idle)
            trio.lowlevel.add_instrument(idle)
            return idle

    def add_hook(self, hook: Callable[[], bool]) -> None:
        """Run `hook` at the end of each pass, before any spin; it returns True when it left
        work to a task (the loop will not sleep, so there is nothing to spin for)."""
        self._hooks.append(hook)

    def remove_hook(self, hook: Callable[[], bool]) -> None:
        self._hooks.remove(hook)

    def watch(self, sock: socket.socket) -> None:
        """Let bytes arriving on `sock` end a spin (if epoll refuses it, a spin waits for
        them at most the budget: never a reason to refuse a connection)."""
        if self._ready is not None:
            with contextlib.suppress(OSError, ValueError):
                self._ready.register(sock, select.EPOLLIN)

    def unwatch(self, sock: socket.socket) -> None:
        """Stop watching `sock` (before it is closed; a closed one has left the set)."""
        if self._ready is not None:
            with contextlib.suppress(OSError, ValueError):
                self._ready.unregister(sock)

    def before_io_wait(self, timeout: float) -> None:
        busy = False
        for hook in self._hooks:
            busy = hook() or busy
        budget = self._budget = self.budget()
        now = self._waiting_since = time.perf_counter()
        if busy or timeout <= 0 or not self._short or self._ready is None:
            return
        end = now + min(budget, timeout)
        poll = self._ready.poll
        while not poll(0) and time.perf_counter() < end:
            pass

    def after_io_wait(self, timeout: float) -> None:
        self._short = time.perf_counter() - self._waiting_since <= self._budget
