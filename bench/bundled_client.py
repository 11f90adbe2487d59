"""Hopper through the bundled client: `Client.push`, `push_bulk`, and two Workers.

`sync_worker` runs the job as a plain function (in a thread: the client's default),
`async_worker` as a trio task (its fastest documented mode). Both read HOPPER_URL. With
BENCH_SPIN_MS set (the CPU-bound modes), the sync job first spins that many milliseconds of
its thread's CPU time, then records: the end-to-end time covers every job's work.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.probe import record
from hopper_client import Client, Worker, make_job
from hopper_client.pipeline import Pipeline

sync_worker = Worker()
async_worker = Worker()
SPIN = float(os.environ.get("BENCH_SPIN_MS", "0")) / 1000  # seconds of CPU per job


@sync_worker.job("noop")
def noop(sent: float) -> None:
    if SPIN:
        until = time.thread_time() + SPIN
        while time.thread_time() < until:
            pass
    record(sent)


@async_worker.job("noop")
async def anoop(sent: float) -> None:
    record(sent)


class Pusher:
    def __init__(self) -> None:
        self.client = Client()

    def push(self, sent: float) -> None:
        self.client.push("noop", [sent])

    def push_batch(self, sent: float, count: int) -> None:
        self.client.push_bulk([make_job("noop", [sent]) for _ in range(count)])

    @contextmanager
    def pipeline(self) -> Iterator["PipedPusher"]:
        """Single pushes written without waiting; all confirmed when the block ends."""
        with self.client.pipeline() as pipe:
            yield PipedPusher(pipe)


class PipedPusher:
    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe

    def push(self, sent: float) -> None:
        self.pipe.push("noop", [sent])

    def push_batch(self, sent: float, count: int) -> None:
        self.pipe.push_bulk([make_job("noop", [sent]) for _ in range(count)])


def pusher() -> Pusher:
    return Pusher()
