"""Interop with the PyPI `faktory` client, both ways, through a real broker."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import faktory
import msgspec
import pytest
import redis
import trio

from hopper_broker.app import App
from hopper_broker.store.keys import QueueKeys
from hopper_client import Client, Job, Worker
from tests.conftest import eventually, live_jids, live_jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("store_mode"),
    pytest.mark.on_cluster,
]
DEFAULT = QueueKeys("default")

ARGS: list[list[Any]] = [
    [1, 2],
    ["héllo ✓ 🚀", {"nested": [1, {"deep": None}]}],
    [list(range(100)), "z" * 10_000],
]

FAKTORY_WORKER = """
import json, os, pathlib
from faktory import Worker

out = pathlib.Path(os.environ["OUT"])

def record(*args):
    with out.open("a") as f:
        f.write(json.dumps(args) + "\\n")

def explode(*args):
    raise RuntimeError("faktory worker says no")

worker = Worker(faktory=os.environ["FAKTORY_URL"], concurrency=2, use_threads=True)
worker.register("record", record)
worker.register("explode", explode)
worker.run()
"""


def url(broker: App) -> str:
    return f"tcp://127.0.0.1:{broker.port}"


async def test_faktory_client_pushes_hopper_worker_runs(
    broker: App, rdb: redis.Redis, nursery: trio.Nursery
) -> None:
    seen: list[list[Any]] = []
    worker = Worker(url(broker), heartbeat=0.05)
    worker.register("record", lambda *args: seen.append(list(args)))
    await nursery.start(worker.arun)

    def push() -> list[bool]:
        with faktory.connection(url(broker)) as client:
            return [client.queue("record", args=args, queue="default") for args in ARGS]

    assert await trio.to_thread.run_sync(push) == [True] * len(ARGS)
    await eventually(lambda: len(seen) == len(ARGS) and live_jobs(rdb) == 0)
    assert sorted(seen, key=json.dumps) == sorted(ARGS, key=json.dumps)
    worker.terminate()


async def test_hopper_client_pushes_faktory_worker_runs(
    broker: App, rdb: redis.Redis, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    script = tmp_path / "faktory_worker.py"
    script.write_text(textwrap.dedent(FAKTORY_WORKER))
    env = {**os.environ, "OUT": str(out), "FAKTORY_URL": url(broker)}
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, str(script)], env=env, stdout=log, stderr=log)
    try:

        def push() -> str:
            with Client(url(broker)) as client:
                for args in ARGS:
                    client.push("record", args)
                return client.push("explode", ["x"], retry=2)

        failed = await trio.to_thread.run_sync(push)
        await eventually(lambda: out.exists() and len(out.read_text().splitlines()) == len(ARGS))
        await eventually(lambda: live_jids(rdb) == {failed} and rdb.zscore(DEFAULT.retries, failed))
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(lines, key=json.dumps) == sorted(ARGS, key=json.dumps)
        failure = msgspec.json.decode(rdb.hget(DEFAULT.jobs, failed), type=Job).failure
        assert failure is not None
        assert (failure.errtype, failure.message) == ("RuntimeError", "faktory worker says no")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await eventually(lambda: process.poll() is not None, timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(5)
