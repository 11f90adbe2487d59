"""rq: a Queue on the default queue name; `rq worker -u URL` runs it."""

import os

from redis import Redis
from rq import Queue

from bench.probe import record


def noop(sent: float) -> None:
    record(sent)


class Pusher:
    def __init__(self) -> None:
        self.queue = Queue(connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))

    def push(self, sent: float) -> None:
        self.queue.enqueue(noop, sent)

    def push_batch(self, sent: float, count: int) -> None:
        self.queue.enqueue_many([Queue.prepare_data(noop, (sent,)) for _ in range(count)])


def pusher() -> Pusher:
    return Pusher()
