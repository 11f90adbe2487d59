"""A data directory written by storage schema 1 (tests/data/v1-store, see its README) is
migrated when a broker starts on it: every job keeps its place, nothing is lost, once."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.conftest import BrokerProcess, check_store
from tests.wire import SyncWire

V1_STORE = Path(__file__).parent / "data" / "v1-store"
QUEUES = "default critical later one two flaky slow held"


def test_a_schema_1_data_directory_is_migrated(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(V1_STORE, data)
    broker = broker_process("--data-dir", str(data), embedded=True)
    log = broker.log.read_text()
    assert "migrating 9 queues from storage schema 1 to schema 2" in log
    assert "the job in two is now twice-0000-two" in log
    w = SyncWire(broker.port, hello={"wid": "after-upgrade"})

    info = json.loads(w.call("INFO"))["faktory"]
    assert info["sets"]["dead"] == 1 and info["sets"]["scheduled"] == 1
    assert info["total_processed"] >= 3 and info["total_failures"] >= 2
    assert w.call("FETCH", "held") is None  # still paused
    check_store(f"unix://{data / 'redis.sock'}")

    assert w.call("QUEUE", "RESUME held") == b"OK"
    for target in ("retries", "dead"):
        assert w.call("MUTATE", {"cmd": "requeue", "target": target}) == b"OK"
    fetched = []
    while payload := w.call("FETCH", QUEUES):
        job = json.loads(payload)
        fetched.append(job["jid"])
        assert w.call("ACK", {"jid": job["jid"]}) == b"OK"
    assert fetched[:4] == ["queued-default-0", "queued-default-1", "queued-default-2", "acked-000"]
    assert sorted(fetched) == sorted(
        [
            "queued-default-0",
            "queued-default-1",
            "queued-default-2",
            "acked-000",
            "queued-critical-0",
            "queued-critical-1",
            "queued-paused-0",
            "scheduled-soon-0",
            "retry-000",
            "dead-0000",
            "working-00",
            "twice-0000",
            "twice-0000-two",
        ]
    )
    w.close()
    assert broker.stop() == 0

    broker.start()  # the store is migrated once
    assert broker.log.read_text().count("migrating 9 queues") == 1
    w = SyncWire(broker.port, hello={})
    assert json.loads(w.call("INFO"))["faktory"]["sets"]["scheduled"] == 1  # the far one
    w.close()
    check_store(f"unix://{data / 'redis.sock'}")
    assert broker.stop() == 0
