"""Wake-ups for FETCHes waiting on empty queues, so that nothing polls Redis in a tight loop.

A waiting FETCH listens on its queues before it looks into Redis, so a push that lands between
the look and the wait still wakes it. A push on this broker rings the queue's bell directly; a
push through another broker rings it through the Redis channel (see app.py). Each ring wakes
one listener, the one that has waited longest.
"""

from collections import deque
from collections.abc import Sequence
from contextlib import suppress

import trio


class _Listening:
    """A listener's place in the lines of its queues, while the `with` block runs."""

    __slots__ = ("lines", "queues", "ticket")

    def __init__(self, lines: dict[str, deque[trio.Event]], queues: Sequence[str]) -> None:
        self.lines, self.queues, self.ticket = lines, queues, trio.Event()

    def __enter__(self) -> trio.Event:
        for queue in self.queues:
            line = self.lines.get(queue)
            if line is None:
                line = self.lines[queue] = deque()
            line.append(self.ticket)
        return self.ticket

    def __exit__(self, *_: object) -> None:
        for queue in self.queues:
            line = self.lines.get(queue)
            if line is not None:
                with suppress(ValueError):
                    line.remove(self.ticket)
                if not line:
                    del self.lines[queue]


class Doorbell:
    """Per-queue lines of waiting FETCHes."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[trio.Event]] = {}

    def listen(self, queues: Sequence[str]) -> _Listening:
        """`with` it: an event set by the next ring of any of `queues`; listen before looking."""
        return _Listening(self._lines, queues)

    def ring(self, queue: str, times: int = 1) -> None:
        """Wake up to `times` listeners of `queue`, longest-waiting first."""
        line = self._lines.get(queue)
        while line and times > 0:
            ticket = line.popleft()
            if not ticket.is_set():
                ticket.set()
                times -= 1

    def ring_all(self) -> None:
        """Wake every listener (shutdown)."""
        for queue in list(self._lines):
            self.ring(queue, len(self._lines.get(queue, ())))
