"""When to try again after a lost connection: exponential delays with jitter, within a budget."""

import math
import random
import time
from collections.abc import Callable

FIRST_DELAY = 0.05  # seconds before the second attempt (the first retry is immediate)
MAX_DELAY = 2.0  # seconds between attempts at most


class Backoff:
    """Delays between reconnection attempts; `delay(error)` re-raises once `budget` is spent.

    The first retry is always immediate and always allowed: after a broker restart, pooled
    connections are dead but a new one succeeds at once.
    """

    def __init__(
        self, budget: float = math.inf, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget = budget
        self.clock = clock
        self.attempts = 0
        self._deadline = 0.0

    def delay(self, error: Exception) -> float:
        """Seconds to wait before the next attempt; raises `error` when out of budget."""
        now = self.clock()
        self.attempts += 1
        if self.attempts == 1:
            self._deadline = now + self.budget
            return 0.0
        pause = min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(self.attempts - 2, 10))
        pause *= random.uniform(0.5, 1.0)
        if now + pause > self._deadline:
            raise error
        return pause

    def reset(self) -> None:
        """Start over after a success."""
        self.attempts = 0
