"""`hopper run`: settings from flags, environment and TOML file; start-up and clean stop."""

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hopper_broker.__main__ import load_config, parser
from tests.conftest import BrokerProcess
from tests.wire import SyncWire, WireError


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["run", *argv])


def test_defaults() -> None:
    config = load_config(args(), {})
    assert config.bind == "127.0.0.1:7419" and config.password == "" and config.redis_url == ""


def test_flags_beat_env_beat_file(tmp_path: Path) -> None:
    toml = tmp_path / "hopper.toml"
    toml.write_text('bind = "127.0.0.1:1111"\nmax_connections = 5\nidle_timeout = 9.5\n')
    env = {"HOPPER_BIND": "127.0.0.1:2222", "HOPPER_MAX_CONNECTIONS": "7"}
    config = load_config(args("--config", str(toml), "--bind", "127.0.0.1:3333"), env)
    assert config.bind == "127.0.0.1:3333" and config.max_connections == 7
    assert config.idle_timeout == 9.5
    assert load_config(args("--config", str(toml)), env).bind == "127.0.0.1:2222"
    assert load_config(args("--config", str(toml)), {}).bind == "127.0.0.1:1111"


def test_password_sources(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    assert load_config(args(), {"FAKTORY_PASSWORD": "f"}).password == "f"
    assert load_config(args(), {"HOPPER_PASSWORD": "h", "FAKTORY_PASSWORD": "f"}).password == "h"
    assert load_config(args(), {"HOPPER_PASSWORD": str(secret)}).password == "from-file"
    assert load_config(args("--password", "p"), {"HOPPER_PASSWORD": "h"}).password == "p"


def test_redis_url_from_env() -> None:
    assert load_config(args(), {"REDIS_URL": "redis://x:1/0"}).redis_url == "redis://x:1/0"


def test_redis_timeout_sources() -> None:
    assert load_config(args(), {}).redis_timeout == 10.0
    assert load_config(args(), {"HOPPER_REDIS_TIMEOUT": "2.5"}).redis_timeout == 2.5
    assert load_config(args("--redis-timeout", "3"), {}).redis_timeout == 3.0
    with pytest.raises(ValueError, match="redis_timeout must be positive"):
        load_config(args("--redis-timeout", "0"), {})


def test_busy_poll_sources() -> None:
    assert load_config(args(), {}).busy_poll_us == 200
    assert load_config(args(), {"HOPPER_BUSY_POLL_US": "0"}).busy_poll_us == 0
    assert load_config(args("--busy-poll-us", "50"), {}).busy_poll_us == 50
    for wrong in ("-1", "10001"):
        with pytest.raises(ValueError, match="busy_poll_us must be between 0 and 10,000"):
            load_config(args("--busy-poll-us", wrong), {})


def test_open_bind_needs_password_or_consent() -> None:
    with pytest.raises(ValueError, match="without a password"):
        load_config(args("--bind", "0.0.0.0:7419"), {})
    assert load_config(args("--bind", "0.0.0.0:7419", "--password", "x"), {}).host == "0.0.0.0"
    assert load_config(args("--bind", "0.0.0.0:7419", "--allow-open-bind"), {}).port == 7419


def test_help_lists_the_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "hopper_broker", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--bind", "--password", "--redis-url", "--data-dir", "--config"):
        assert flag in out
    assert "--redis-start-timeout REDIS_START_TIMEOUT" in out and "default: 30.0" in out


def test_bad_setting_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hopper_broker", "run", "--max-connections", "lots"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "hopper:" in done.stderr and "Traceback" not in done.stderr


def test_redis_start_timeout_sources() -> None:
    assert load_config(args(), {}).redis_start_timeout == 30.0
    env = {"HOPPER_REDIS_START_TIMEOUT": "2.5"}
    assert load_config(args(), env).redis_start_timeout == 2.5
    assert load_config(args("--redis-start-timeout", "3"), env).redis_start_timeout == 3.0
    with pytest.raises(ValueError, match="redis_start_timeout must be positive"):
        load_config(args("--redis-start-timeout", "0"), {})


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def can_log_in(port: int, password: str) -> bool:
    try:
        SyncWire(port, password=password).close()
        return True
    except WireError:
        return False


def test_sighup_reloads_the_password(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    toml = tmp_path / "hopper.toml"
    toml.write_text('password = "one"\n')
    broker = broker_process("--config", str(toml))
    assert can_log_in(broker.port, "one") and not can_log_in(broker.port, "two")
    toml.write_text('password = "two"\n')
    assert broker.process is not None
    broker.process.send_signal(signal.SIGHUP)
    wait_until(lambda: can_log_in(broker.port, "two"))
    assert not can_log_in(broker.port, "one")


def test_sigterm_stops_the_embedded_redis(
    broker_process: Callable[..., BrokerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    broker = broker_process("--data-dir", str(data), embedded=True)
    pid = int((data / "redis.pid").read_text())
    assert Path(f"/proc/{pid}").exists()
    assert broker.stop() == 0
    wait_until(lambda: not Path(f"/proc/{pid}").exists())
    assert (data / "appendonlydir").is_dir()
    assert "listening on 127.0.0.1:" in broker.log.read_text()
