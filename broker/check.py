"""`hopper check [--repair]`: run the store's audit (store/audit.py) against the broker's Redis
and print what it found, one line per problem and a summary; exit 0 when the store is sound
(or every problem was repaired), 1 otherwise.

With an embedded Redis (no redis_url) it uses the running broker's redis-server, or starts the
data directory's own for the time of the check when no broker runs.
"""

from pathlib import Path

import msgspec
import trio

from hopper_broker.config import Config
from hopper_broker.errors import StartError
from hopper_broker.reach import reach
from hopper_broker.redis_server import EmbeddedRedis, answers_ping
from hopper_broker.store.audit import Auditor
from hopper_broker.store.audit_part import Report
from hopper_broker.store.cluster import ClusterPipeline
from hopper_broker.store.redis import Store


async def check(config: Config, *, repair: bool, as_json: bool) -> int:
    """Run the audit; print the report; return the exit status."""
    async with trio.open_nursery() as nursery:
        url = config.redis_url or await _embedded_url(config, nursery)
        connection = await reach(
            url, nursery, lambda: config.redis_timeout, config.redis_start_timeout
        )
        store = Store(connection)
        store.redis.split = isinstance(connection, ClusterPipeline) or await store.written_split()
        report = await Auditor(store, repair=repair).run()
        nursery.cancel_scope.cancel()
    _print(report, as_json)
    return 0 if report.clean else 1


async def _embedded_url(config: Config, nursery: trio.Nursery) -> str:
    embedded = EmbeddedRedis(
        config.data_dir, config.redis_server, config.appendfsync, config.redis_start_timeout
    )
    if await answers_ping(embedded.url):
        return embedded.url
    if not Path(config.data_dir).is_dir():
        raise StartError(f"no data directory {config.data_dir}")
    url: str = await nursery.start(embedded.run)
    return url


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(report).decode())
        return
    for problem in report.problems:
        print(problem.describe())
    print(report.summary())
