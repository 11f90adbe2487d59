"""Wake-ups for FETCHes waiting on empty queues, so that nothing polls Redis in a tight loop.

A waiting FETCH listens on its queues before it looks into Redis, so a push that lands between
the look and the wait still wakes it. A push on this broker rings the queue's bell directly; a
push through another broker rings it through the Redis channel (see app.py). Each ring wakes
one listener, the one that has waited longest.
"""

from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

import trio


class Doorbell:
    """Per-queue lines of waiting FETCHes."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[trio.Event]] = {}

    @contextmanager
    def listen(self, queues: Sequence[str]) -> Iterator[trio.Event]:
        """An event set by the next ring of any of `queues`; listen before looking."""
        ticket = trio.Event()
        for queue in queues:
            self._lines.setdefault(queue, deque()).append(ticket)
        try:
            yield ticket
        finally:
            for queue in queues:
                line = self._lines.get(queue)
                if line is not None:
                    with suppress(ValueError):
                        line.remove(ticket)
                    if not line:
                        del self._lines[queue]

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
