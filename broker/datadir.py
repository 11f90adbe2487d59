"""The data directory's lock: one broker process at a time uses a data directory.

The owner holds an exclusive flock on `<data_dir>/hopper.lock`, which holds its pid as text. The
kernel drops a flock when the last descriptor on it closes, which happens however the process
ends (SIGKILL included): a lock held proves its broker alive, a lock acquired proves the previous
owner dead. The descriptor is close-on-exec, so the redis-server child never holds the lock on a
dead broker's behalf. The file stays when the broker stops: deleting it would let two processes
each lock a different file of the same name.
"""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from hopper_broker.errors import StartError

LOCK_FILE = "hopper.lock"


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Own `directory` (created if missing) until the block ends; raises StartError naming the
    holder when another process owns it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StartError(f"cannot use data directory {directory}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartError(f"data directory {directory} is in use by {_holder(fd)}") from None
        except OSError as exc:
            raise StartError(f"cannot lock data directory {directory}: {exc}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """The owner, by the pid it wrote (an owner that has just locked may not have written it)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return f"broker pid {text}" if text.isdigit() else "another broker"
