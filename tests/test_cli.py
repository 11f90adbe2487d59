"""`hopper run`: settings from flags, environment and TOML file; start-up and clean stop."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from broker.__main__ import load_config, parser


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


def test_open_bind_needs_password_or_consent() -> None:
    with pytest.raises(ValueError, match="without a password"):
        load_config(args("--bind", "0.0.0.0:7419"), {})
    assert load_config(args("--bind", "0.0.0.0:7419", "--password", "x"), {}).host == "0.0.0.0"
    assert load_config(args("--bind", "0.0.0.0:7419", "--allow-open-bind"), {}).port == 7419


def test_help_lists_the_settings() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "broker", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--bind", "--password", "--redis-url", "--data-dir", "--config"):
        assert flag in out


def test_bad_setting_exits_cleanly() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "broker", "run", "--max-connections", "lots"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "hopper:" in done.stderr and "Traceback" not in done.stderr
