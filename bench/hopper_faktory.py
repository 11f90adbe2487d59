"""Hopper through the PyPI `faktory` client: `Client.queue` and its Worker (reads FAKTORY_URL).

`python -m bench.hopper_faktory processes|threads` runs the worker: a process pool (the
library's default) or threads (`use_threads=True`), BENCH_CONCURRENCY at a time.
"""

import logging
import os
import sys

import faktory

from bench.probe import record


def noop(sent: float) -> None:
    record(sent)


class Pusher:
    def __init__(self) -> None:
        self.client = faktory.Client()
        self.client.connect()

    def push(self, sent: float) -> None:
        self.client.queue("noop", args=[sent])

    def push_batch(self, sent: float, count: int) -> None:
        raise NotImplementedError("the faktory client has no bulk push")


def pusher() -> Pusher:
    return Pusher()


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    worker = faktory.Worker(
        queues=["default"],
        concurrency=int(os.environ["BENCH_CONCURRENCY"]),
        use_threads=sys.argv[1] == "threads",
    )
    worker.register("noop", noop)
    worker.run()


if __name__ == "__main__":
    main()
