"""huey: a RedisHuey app; the consumer loads `bench.peers.huey.huey`."""

import os

from huey import RedisHuey  # type: ignore[import-untyped]

from bench.probe import record

huey = RedisHuey("bench", url=os.environ.get("BENCH_REDIS_URL"))


@huey.task()  # type: ignore[untyped-decorator]
def noop(sent: float) -> None:
    record(sent)


class Pusher:
    def push(self, sent: float) -> None:
        noop(sent)

    def push_batch(self, sent: float, count: int) -> None:
        raise NotImplementedError("huey has no bulk enqueue")


def pusher() -> Pusher:
    return Pusher()
