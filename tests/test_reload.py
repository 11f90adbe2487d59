"""A reload (SIGHUP) reaches every component: each reloadable setting takes effect without a
restart, and the settings only a restart can change say so."""

import json
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import trio

from chaos.load import wait_for
from hopper_broker.app import App
from hopper_broker.config import RESTART_ONLY
from hopper_broker.policy import QueueRules
from hopper_broker.store.keys import QueueKeys
from tests.conftest import BrokerProcess, StartBroker, eventually
from tests.wire import SyncWire, Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

K = QueueKeys("default")
SLOW = 3600.0  # an interval that never comes round during a test


def reload(app: App, **changes: Any) -> list[str]:
    return app.reload(msgspec.structs.replace(app.settings(), **changes))


def redis_now(rdb: redis.Redis) -> float:
    seconds, micros = rdb.time()
    return float(seconds + micros / 1e6)


async def test_every_component_reads_the_same_settings(broker: App) -> None:
    assert broker.manager is not None and broker.server is not None
    settings = broker.settings
    holders = (broker.manager, broker.manager.workers, broker.manager.mutator)
    assert all(holder.settings is settings for holder in holders)
    assert broker.server.config is settings
    reload(broker, reaper_batch=7)
    assert broker.manager.settings().reaper_batch == 7


async def test_reservations(broker: App, rdb: redis.Redis) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    reload(broker, default_reservation=500, min_reservation=100, max_reservation=700)
    for jid, reserve_for, expected in (
        ("jid-dflt", 0, 500),
        ("jid-low1", 5, 100),
        ("jid-hi01", 900, 700),
    ):
        await w.call("PUSH", job(jid, reserve_for=reserve_for))
        await w.call("FETCH", "default")
        assert abs(rdb.zscore(K.working, jid) - redis_now(rdb) - expected) < 5


async def test_dead_ttl_reaches_fail_and_mutate(broker: App, rdb: redis.Redis) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    reload(broker, dead_ttl=1000.0)
    await w.call("PUSH", job("jid-dead", retry=-1))
    await w.call("FETCH", "default")
    await w.call("FAIL", {"jid": "jid-dead"})
    await w.call("PUSH", job("jid-kill"))
    await w.call("FETCH", "default")
    await w.call("FAIL", {"jid": "jid-kill"})
    await w.call("MUTATE", {"cmd": "kill", "target": "retries"})
    for jid in ("jid-dead", "jid-kill"):
        assert abs(rdb.zscore(K.dead, jid) - redis_now(rdb) - 1000) < 5


async def test_fetch_timeout(start_broker: StartBroker) -> None:
    app = await start_broker(fetch_timeout=SLOW)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    reload(app, fetch_timeout=0.05)
    with trio.fail_after(5):
        assert await w.call("FETCH", "default") is None


@pytest.mark.parametrize(
    ("setting", "extra"),
    [
        ("scheduler_interval", {}),
        ("reaper_interval", {"min_reservation": 1}),
        ("dead_purge_interval", {"dead_ttl": 0.0}),
        ("worker_reaper_interval", {"worker_ttl": 0.2}),
    ],
)
async def test_loop_intervals_take_effect_at_once(
    start_broker: StartBroker, rdb: redis.Redis, setting: str, extra: dict[str, Any]
) -> None:
    app = await start_broker(**{setting: SLOW}, **extra)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    await trio.testing.wait_all_tasks_blocked()
    if setting == "scheduler_interval":
        await w.call("PUSH", job("jid-sched", at=_soon()))
        done: Callable[[], bool] = lambda: rdb.llen(K.queue) == 1  # noqa: E731
    elif setting == "reaper_interval":
        await w.call("PUSH", job("jid-busy", reserve_for=1))
        await w.call("FETCH", "default")
        done = lambda: rdb.zcard(K.retries) == 1  # noqa: E731
    elif setting == "dead_purge_interval":
        await w.call("PUSH", job("jid-dead", retry=-1))
        await w.call("FETCH", "default")
        await w.call("FAIL", {"jid": "jid-dead"})
        done = lambda: rdb.zcard(K.dead) == 0  # noqa: E731
    else:
        done = lambda: rdb.zcard("hopper:g:{g}:workers") == 0  # noqa: E731
    await trio.sleep(0)
    assert not done()
    reload(app, **{setting: 0.05})
    await eventually(done, timeout=5)


def _soon() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))


async def test_worker_ttl(start_broker: StartBroker, rdb: redis.Redis) -> None:
    app = await start_broker(worker_ttl=SLOW)
    w = await Wire.open(app.port, hello={"wid": "w1"})
    assert await w.call("BEAT", {"wid": "w1"}) == b"OK"
    reload(app, worker_ttl=0.1)
    with trio.fail_after(5):
        assert await w.closed()  # a silent worker's connections are closed


async def test_connection_limits(start_broker: StartBroker) -> None:
    app = await start_broker()
    reload(app, max_line_bytes=100, max_connections=1, handshake_timeout=0.1)
    first = await Wire.open(app.port, hello={})
    with pytest.raises(WireError, match="too many connections"):
        await Wire.open(app.port, hello={})
    with pytest.raises(WireError, match="line too long"):
        await first.call("PUSH", job("jid-long", args=["x" * 200]))
    silent = await Wire.open(app.port)
    with trio.fail_after(5):
        assert await silent.closed()


async def test_password(start_broker: StartBroker) -> None:
    app = await start_broker(password="old")
    reload(app, password="new")
    assert await (await Wire.open(app.port, hello={}, password="new")).call("INFO")
    with pytest.raises(WireError, match="Invalid password"):
        await Wire.open(app.port, hello={}, password="old")


async def test_a_number_that_is_not_finite_is_refused(broker: App) -> None:
    for name in ("dead_purge_interval", "handshake_timeout", "redis_timeout"):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            reload(broker, **{name: float("nan")})
    assert broker.settings().dead_purge_interval > 0


@pytest.mark.parametrize("store_mode", ["one"], indirect=True)
async def test_a_reload_while_queue_settings_are_written_is_applied(
    broker: App, rdb: redis.Redis
) -> None:
    """Two reloads: the queue ends with the second's `[queues.<name>]`, though it came while
    the first one's were still being written (Redis held writes for a while)."""
    rdb.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
    reload(broker, queues={"rq": QueueRules(max_size=5)})
    await trio.sleep(0.2)  # room for the first write to start (else the test proves nothing)
    reload(broker, queues={"rq": QueueRules(max_size=7)})
    wire = await Wire.open(broker.port, hello={})

    async def applied() -> bool:
        queues = json.loads(await wire.call("INFO"))["hopper"]["queues"]
        return bool(queues.get("rq", {}).get("max_size") == "7")

    await eventually(applied)


async def test_restart_only_settings_keep_their_values(broker: App) -> None:
    changes = {
        "bind": "127.0.0.1:1",
        "data_dir": "/elsewhere",
        "redis_url": "redis://elsewhere:1",
        "fetch_timeout": 9.0,
    }
    kept = reload(broker, **changes)
    assert kept == sorted(RESTART_ONLY & set(changes))
    config = broker.settings()
    assert config.fetch_timeout == 9.0 and config.bind == "127.0.0.1:0"


def test_sighup_rereads_the_file(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    settings = tmp_path / "hopper.toml"
    settings.write_text('password = "first"\n')
    broker = broker_process("--config", str(settings))
    assert SyncWire(broker.port, hello={}, password="first").call("INFO")
    settings.write_text('password = "second"\ndata_dir = "/elsewhere"\nlog_level = "DEBUG"\n')
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    restart_only = "data_dir: changed only by a restart"
    wait_for(lambda: restart_only in broker.log.read_text(), 10, "the reload")
    assert "configuration reloaded" in broker.log.read_text()
    assert SyncWire(broker.port, hello={}, password="second").call("INFO")
    with pytest.raises(WireError, match="Invalid password"):
        SyncWire(broker.port, hello={}, password="first")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.recv(100)  # the greeting
        sock.sendall(b"PUSH {}\r\n")  # not a HELLO: closed, and said so at DEBUG
        assert sock.recv(100) == b""
    wait_for(lambda: "handshake refused" in broker.log.read_text(), 10, "DEBUG lines")
    assert broker.stop() == 0
