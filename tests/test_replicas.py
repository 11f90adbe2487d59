"""push_replicas: a pushed job is answered +OK only once that many Redis replicas have it
(WAIT); a replica that is gone turns the answer into an error that says so, and the job stays
stored (a master that fails over later can lose only what was answered with that error)."""

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.keys import BATCHES_DUE, QueueKeys
from tests.conftest import StartBroker, eventually, free_port, test_config
from tests.wire import Wire, WireError, job


def start_redis(workdir: Path, port: int, *more: str) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *more,
        ],
        stdout=subprocess.DEVNULL,
    )


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A master on a loopback port with one replica: (master port, the replica's process)."""
    master_port, replica_port = free_port(), free_port()
    master = start_redis(tmp_path / "master", master_port, "--repl-diskless-sync-delay", "0")
    replica = start_redis(
        tmp_path / "replica", replica_port, "--replicaof", "127.0.0.1", str(master_port)
    )
    try:
        yield master_port, replica
    finally:
        for process in (replica, master):
            process.kill()
            process.wait()


async def test_a_push_waits_for_its_replica_and_says_when_it_is_gone(
    nursery: trio.Nursery, replicated: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, replica = replicated
    master = redis.Redis(port=port)

    def connected() -> bool:
        found = master.info("replication")
        return int(found["connected_slaves"]) == 1 and found["slave0"]["state"] == "online"

    await eventually(connected)
    broker = App(
        test_config(f"redis://127.0.0.1:{port}", push_replicas=1, push_replicas_timeout=2.0)
    )
    await nursery.start(broker.run)
    w = await Wire.open(broker.port, hello={})
    assert await w.call("PUSH", job("replicated-1")) == b"OK"
    assert json.loads(await w.call("PUSHB", [job("replicated-2"), job("replicated-3")])) == {}
    replica.kill()
    replica.wait()
    await eventually(lambda: not connected())
    with pytest.raises(WireError, match=r"copied to 0 of 1 Redis replicas within 2 s"):
        await w.call("PUSH", job("unsafe-1"))
    state = json.loads(await w.call("JOB", "STATE unsafe-1"))
    assert state["state"] == "queued"  # stored all the same
    refused = json.loads(await w.call("PUSHB", [job("unsafe-2"), job("replicated-1")]))
    assert "copied to 0 of 1" in refused["unsafe-2"] and "in use" in refused["replicated-1"]


async def test_a_callback_not_yet_on_its_replica_is_logged_as_pushed(
    start_broker: StartBroker, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch callback that the batches push stored, but not on the replicas push_replicas
    asks for, is pushed (it runs; it is not pushed again), and the log says so."""
    broker = await start_broker(push_replicas=1, push_replicas_timeout=0.05)  # no replica
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    callback = job("unsafe-callback", "Done", queue="cbs")
    bid = (await w.call("BATCH", "NEW " + json.dumps({"success": callback}))).decode()
    with pytest.raises(WireError, match="copied to 0 of 1"):
        await w.call("PUSH", job("unsafe-member", custom={"bid": bid}))
    await w.call("BATCH", f"COMMIT {bid}")
    fetched = json.loads(await w.call("FETCH", "default"))
    said = f"batch {bid}: success callback stored, but copied to 0 of 1"
    with caplog.at_level(logging.WARNING, logger="hopper_broker.batches"):
        assert await w.call("ACK", {"jid": fetched["jid"]}) == b"OK"
        await eventually(lambda: said in caplog.text)  # the ACK's fire, or the loop's
    assert "refused" not in caplog.text
    assert rdb.lrange(QueueKeys("cbs").queue, 0, -1) == ["unsafe-callback"]
    assert rdb.zcard(BATCHES_DUE) == 0
