"""Interoperability with the unchanged PyPI `faktory` client: producer and worker; as on one
Redis, in split mode and on the cluster rig."""

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import faktory
import pytest
import redis

from hopper_broker.store.keys import QueueKeys
from tests.conftest import BrokerProcess
from tests.wire import SyncWire

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

WORKER = textwrap.dedent(
    """
    import sys
    from faktory import Worker

    def add(x, y):
        return x + y

    def boom(x):
        raise ValueError(f"boom {x}")

    worker = Worker(faktory=sys.argv[1], queues=["default", "other"], concurrency=4,
                    use_threads=True)
    worker.register("add", add)
    worker.register("boom", boom)
    worker.run()
    """
)


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_pypi_client_and_worker(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis, tmp_path: Path
) -> None:
    broker = broker_process()
    with faktory.connection(broker.url) as client:
        for i in range(40):
            assert client.queue("add", args=(i, i), queue="default")
        for i in range(5):
            assert client.queue("boom", args=(i,), queue="other", retry=3)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen([sys.executable, str(script), broker.url])
    try:
        probe = SyncWire(broker.port)

        def settled() -> bool:
            info = json.loads(probe.call("INFO"))["faktory"]
            return info["total_processed"] == 45 and info["sets"]["retries"] == 5

        wait_for(settled)
        info = json.loads(probe.call("INFO"))["faktory"]
        assert info["total_failures"] == 5 and info["total_enqueued"] == 0
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    other = QueueKeys("other")
    retrying = rdb.hmget(other.jobs, rdb.zrange(other.retries, 0, -1))
    failures = [json.loads(p)["failure"] for p in retrying]
    assert len(failures) == 5
    assert {f["errtype"] for f in failures} == {"ValueError"}
    assert all(f["message"].startswith("boom ") and f["remaining"] == 3 for f in failures)


def test_pypi_client_scheduled_and_custom(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis
) -> None:
    broker = broker_process()
    with faktory.connection(broker.url) as client:
        assert client.queue("add", args=(1, 2), at="2099-01-01T00:00:00Z", custom={"tenant": 7})
    stored = json.loads(rdb.hvals(QueueKeys("default").jobs)[0])
    assert stored["custom"] == {"tenant": 7} and "priority" not in stored
    assert rdb.zcard(QueueKeys("default").scheduled) == 1
