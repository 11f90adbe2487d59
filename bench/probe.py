"""The completion signal shared by every system: the no-op job's one side effect.

Each job is called with one argument, `sent` (the producer's time.time() just before the push),
and appends a 16-byte record (sent, started) to the file named by $BENCH_PROBE. O_APPEND writes
of a regular file are atomic, so threads, processes and forked children of any worker can all
write to it without a lock, and nothing is lost. One write() costs a few µs, the same for every
system. The harness polls the file's size to count completions and reads the records for the
end-to-end time (last `started`) and push → start latencies (`started - sent`).
"""

import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV = "BENCH_PROBE"
RECORD = struct.Struct("<dd")
WARMUP = -1.0  # `sent` of the job that proves a worker is up; not counted
POLL = 0.005  # seconds between two looks at the probe file

_fd: tuple[int, int] | None = None  # (pid, fd): a forked child opens its own


def record(sent: float) -> None:
    """The body of every no-op job: note that it started."""
    global _fd
    started = time.time()
    if _fd is None or _fd[0] != os.getpid():
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        _fd = (os.getpid(), os.open(os.environ[ENV], flags, 0o644))
    os.write(_fd[1], RECORD.pack(sent, started))


@dataclass(frozen=True)
class Record:
    sent: float
    started: float


class Probe:
    """The harness's side: counts and reads the records written since `mark()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()
        self.offset = 0

    @property
    def env(self) -> dict[str, str]:
        return {ENV: str(self.path)}

    def count(self) -> int:
        """Records written since the last mark."""
        return (self.path.stat().st_size - self.offset) // RECORD.size

    def mark(self) -> None:
        """Forget the records written so far."""
        self.offset = self.path.stat().st_size

    def wait(self, count: int, timeout: float, alive: Callable[[], bool]) -> bool:
        """Wait for `count` records; False on timeout or when `alive()` turns false."""
        deadline = time.monotonic() + timeout
        while self.count() < count:
            if time.monotonic() > deadline or not alive():
                return False
            time.sleep(POLL)
        return True

    def records(self) -> list[Record]:
        """The records written since the last mark, warm-up jobs left out."""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        data = data[: len(data) - len(data) % RECORD.size]
        return [Record(s, t) for s, t in RECORD.iter_unpack(data) if s != WARMUP]
