"""dramatiq: a RedisBroker and one actor; the CLI loads `bench.peers.dramatiq`."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.probe import record

dramatiq.set_broker(RedisBroker(url=os.environ.get("BENCH_REDIS_URL")))  # type: ignore[no-untyped-call]


@dramatiq.actor
def noop(sent: float) -> None:
    record(sent)


class Pusher:
    def push(self, sent: float) -> None:
        noop.send(sent)

    def push_batch(self, sent: float, count: int) -> None:
        raise NotImplementedError("dramatiq has no bulk enqueue")


def pusher() -> Pusher:
    return Pusher()
