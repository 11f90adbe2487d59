"""`hopper run` refuses what cannot work in one line on stderr, naming where a bad value came
from: exit status 2 for usage and settings, 1 for what fails at start."""

import socket
from pathlib import Path

import msgspec

from hopper_broker.config import Config
from hopper_broker.options import FILE_ONLY, HELP
from tests.admin_cli import hopper, one_line_error

UNITS = ("seconds", "bytes", "address", "jobs", "lines", "characters", "events", "file",
         "directory", "program", "password", "Redis", "DEBUG", "policy", "allow",
         "connections")  # fmt: skip


def test_port_in_use(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = hopper(
            "run",
            "--bind",
            f"127.0.0.1:{port}",
            "--redis-url",
            redis_url,
            "--dashboard-bind",
            "off",
        )
    one_line_error(done, 1, f"cannot listen on 127.0.0.1:{port}: Address already in use")


def test_unknown_log_level() -> None:
    line = one_line_error(hopper("run", "--log-level", "LOUD"), 2, "log_level must be one of")
    assert line.endswith("(from --log-level)")


def test_bad_redis_url() -> None:
    done = hopper("run", "--redis-url", "http://localhost:6379")
    line = one_line_error(done, 2, "redis_url must start with redis://, rediss://, unix://")
    assert line.endswith("(from --redis-url)")
    env = hopper("run", REDIS_URL="localhost:6379")
    assert one_line_error(env, 2, "redis_url must start with").endswith("(from REDIS_URL)")


def test_missing_redis_server(tmp_path: Path) -> None:
    done = hopper("run", "--redis-server", "/no/such/redis-server", "--data-dir", str(tmp_path))
    one_line_error(done, 1, "redis_server: cannot find the program '/no/such/redis-server'")


def test_bad_values_name_their_source(tmp_path: Path) -> None:
    line = one_line_error(hopper("run", "--max-connections", "ten"), 2, "max_connections")
    assert line == "hopper: max_connections: not a whole number: 'ten' (from --max-connections)"
    line = one_line_error(hopper("run", HOPPER_IDLE_TIMEOUT="soon"), 2, "idle_timeout")
    assert line == "hopper: idle_timeout: not a number: 'soon' (from HOPPER_IDLE_TIMEOUT)"
    toml = tmp_path / "hopper.toml"
    toml.write_text('bind = "127.0.0.1:7419"\n\nmax_connections = "lots"\n')
    line = one_line_error(hopper("run", "--config", str(toml)), 2, "max_connections")
    assert line.endswith(f"not a whole number: 'lots' (from {toml} line 3)")
    toml.write_text("[hopper]\nreaper_interval = -1\n")
    line = one_line_error(hopper("run", HOPPER_CONFIG=str(toml)), 2, "reaper_interval")
    assert line == f"hopper: reaper_interval must be positive (from {toml} line 2)"


def test_unknown_key_in_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "hopper.toml"
    toml.write_text('log_level = "INFO"\nredis_urll = "redis://x"\n')
    line = one_line_error(hopper("run", "--config", str(toml)), 2, "unknown setting")
    assert line == (
        f"hopper: {toml} line 2: unknown setting 'redis_urll' (did you mean redis_url?)"
    )
    toml.write_text('[hopper]\nbind = "127.0.0.1:1"\n[hoper.queues]\n')
    one_line_error(hopper("run", "--config", str(toml)), 2, "line 3: unknown setting 'hoper'")
    toml.write_text("[[cron]]\nschedule = '* * * * *'\n[cron.job]\ntpye = 'T'\n")
    one_line_error(hopper("run", "--config", str(toml)), 2, "unknown field `tpye`")
    missing = one_line_error(hopper("run", "--config", str(tmp_path / "nope.toml")), 2, "nope")
    assert missing.endswith("No such file or directory")
    toml.write_text("bind = \n")
    one_line_error(hopper("run", "--config", str(toml)), 2, "(at line 1, column 8)")


def test_unknown_variable() -> None:
    done = hopper("run", HOPPER_REDIS_URLL="redis://x")
    line = one_line_error(done, 2, "unknown environment variable HOPPER_REDIS_URLL")
    assert line.endswith("(did you mean HOPPER_REDIS_URL?)")


def test_unknown_flag() -> None:
    line = one_line_error(hopper("run", "--bnd", "x"), 2, "unknown argument --bnd")
    assert "did you mean --bind?" in line


def test_every_setting_has_help_with_its_unit() -> None:
    fields = [f for f in msgspec.structs.fields(Config) if f.name not in FILE_ONLY]
    settings = [f.name for f in fields]
    field_types = {f.name: f.type for f in fields}
    assert sorted(HELP) == sorted(settings)
    out = hopper("run", "--help").stdout
    for name in settings:
        flag = "--" + name.replace("_", "-")
        assert flag in out
        if field_types[name] is not bool:  # a flag: on or off
            assert any(unit in HELP[name] for unit in UNITS), name
        if name.endswith(("timeout", "interval", "ttl", "grace", "reservation", "age", "wait")):
            assert "seconds" in HELP[name], name
        if name.endswith("bytes"):
            assert "bytes" in HELP[name], name


def test_numbers_that_are_not_finite(tmp_path: Path) -> None:
    done = hopper("run", "--handshake-timeout", "nan")
    assert one_line_error(done, 2, "handshake_timeout must be a finite number").endswith(
        "(from --handshake-timeout)"
    )
    one_line_error(hopper("run", HOPPER_IDLE_TIMEOUT="inf"), 2, "idle_timeout must be a finite")
    toml = tmp_path / "hopper.toml"
    toml.write_text("[retention.dead]\nttl = nan\nmax = 10\n")
    one_line_error(hopper("run", "--config", str(toml)), 2, "retention.dead: ttl must be a finite")


def test_bad_bind_and_tls_files(tmp_path: Path) -> None:
    line = one_line_error(hopper("run", "--bind", "127.0.0.1:abc"), 2, "bind: not host:port")
    assert line.endswith("(from --bind)")
    one_line_error(hopper("run", "--bind", "127.0.0.1:70000"), 2, "port 70000 is not from 0")
    done = hopper("run", "--dashboard-bind", "127.0.0.1:abc")
    line = one_line_error(done, 2, "dashboard_bind: not host:port")
    assert line.endswith("(from --dashboard-bind)")
    done = hopper("run", "--dashboard-bind", "127.0.0.1:70000")
    one_line_error(done, 2, "dashboard_bind: port 70000 is not from 0")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for cert in (str(junk), str(tmp_path / "missing.pem")):
        done = hopper("run", "--tls-cert", cert, "--tls-key", cert, "--data-dir", str(tmp_path))
        one_line_error(done, 1, f"cannot load tls_cert {cert}")


def test_check_gives_up_on_a_redis_that_does_not_answer() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{closed.getsockname()[1]}"
        done = hopper("check", "--redis-url", url, HOPPER_REDIS_START_TIMEOUT="1")
    last = done.stderr.strip().splitlines()[-1]  # after the warnings of each attempt
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert last.startswith(f"hopper: cannot reach redis at {url} within 1s: "), last


def test_check_without_a_data_directory(tmp_path: Path) -> None:
    done = hopper("check", "--data-dir", str(tmp_path / "none"))
    one_line_error(done, 1, f"no data directory {tmp_path / 'none'}")
