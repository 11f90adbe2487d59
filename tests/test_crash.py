"""A broker killed with SIGKILL and restarted loses no job, and ACK/FAIL keep working for
reservations made before the crash (nothing of the working set lives only in memory)."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BrokerProcess, check_store
from tests.wire import SyncWire, WireError


def push_all(port: int, count: int) -> None:
    w = SyncWire(port)
    jobs = [
        {"jid": f"jid-{i:05d}", "jobtype": "work", "args": [i], "retry": 2} for i in range(count)
    ]
    assert json.loads(w.call("PUSHB", jobs)) == {}
    w.close()


@pytest.mark.parametrize("embedded", [True, False])
def test_sigkill_and_restart(
    broker_process: Callable[..., BrokerProcess], redis_url: str, tmp_path: Path, embedded: bool
) -> None:
    args = ["--data-dir", str(tmp_path / "data")] if embedded else []
    broker = broker_process(*args, embedded=embedded)
    push_all(broker.port, 50)
    worker = SyncWire(broker.port, hello={"wid": "w1"})
    reserved = [json.loads(worker.call("FETCH", "default"))["jid"] for _ in range(10)]
    broker.kill()

    broker.start()  # same port, same data dir / Redis
    after = SyncWire(broker.port, hello={"wid": "w1"})
    for jid in reserved[:8]:
        assert after.call("ACK", {"jid": jid}) == b"OK"
    for jid in reserved[8:]:
        assert after.call("FAIL", {"jid": jid, "errtype": "Crash", "message": "x"}) == b"OK"
    with pytest.raises(WireError, match="Job not found"):
        after.call("FAIL", {"jid": reserved[0]})
    rest = []
    while (payload := after.call("FETCH", "default")) is not None:
        rest.append(json.loads(payload)["jid"])
    assert sorted(rest + reserved) == [f"jid-{i:05d}" for i in range(50)]
    info = json.loads(after.call("INFO"))["faktory"]
    assert info["total_processed"] == 10 and info["total_failures"] == 2
    assert info["sets"]["retries"] == 2 and info["sets"]["working"] == 40
    check_store(f"unix://{tmp_path / 'data' / 'redis.sock'}" if embedded else redis_url)
    assert broker.stop() == 0
