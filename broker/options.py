"""The broker's settings as the command line sees them: flags with their help (meaning, unit,
default), environment variables and the TOML file, read with where each value came from, so a
bad value, an unknown key or an unknown HOPPER_* variable is reported in one line naming its
source (`max_connections: not a whole number: 'ten' (from HOPPER_MAX_CONNECTIONS)`)."""

import argparse
import difflib
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from hopper_broker.config import Config

LINK_FLAG = "--supervisor-fd"  # the hidden `hopper run` flag naming a child's end of its link

ENV_ALIASES = {
    "password": ("HOPPER_PASSWORD", "FAKTORY_PASSWORD"),
    "redis_url": ("HOPPER_REDIS_URL", "REDIS_URL"),
}
FILE_ONLY = ("cron", "queues", "throttles", "retention")  # settings only a TOML file gives
FIELDS = [f for f in msgspec.structs.fields(Config) if f.name not in FILE_ONLY]
CONFIG_VARIABLE = "HOPPER_CONFIG"
# HOPPER_* variables that other Hopper tools read: not broker settings, yet not typos.
OTHER_VARIABLES = frozenset(
    {
        "HOPPER_URL",  # the clients and the admin commands
        "HOPPER_CALLBACK_SECRET",  # docs/http-worker.md's example secret_env
        "HOPPER_CHAOS",  # the test suites
        "HOPPER_CHAOS_FIGURES",
        "HOPPER_FUZZ_SEED",
    }
)
KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}

HELP = {
    "bind": "address to listen on, host:port",
    "password": "password clients must give (also FAKTORY_PASSWORD); a value starting "
    "with / names a file holding it",
    "reuse_port": "bind the port with SO_REUSEPORT so that several broker processes on this "
    "host share it",
    "processes": "broker processes sharing the port over one Redis; 0: one per CPU this "
    "process may use, less one for the embedded Redis (docs/processes.md)",
    "redis_url": "external Redis, redis://host:port/db, rediss:// (TLS; ?ssl_ca_certs=FILE) or "
    "unix:///path.sock (also REDIS_URL); none: an embedded redis-server in data_dir",
    "data_dir": "directory of the embedded Redis (AOF, socket, log) and the broker's lock",
    "redis_server": "program run as the embedded Redis",
    "appendfsync": "embedded Redis AOF fsync policy: always, everysec or no",
    "redis_start_timeout": "seconds a starting broker waits for Redis to answer before it "
    "exits with the reason",
    "tls_cert": "PEM certificate chain file; with tls_key the port speaks TLS only",
    "tls_key": "PEM private key file of tls_cert",
    "allow_open_bind": "allow listening on a non-loopback address without a password",
    "log_level": "lowest severity logged: DEBUG, INFO, WARNING, ERROR or CRITICAL",
    "max_line_bytes": "bytes of the longest command line; longer closes the connection",
    "max_connections": "client connections open at once; more are refused",
    "idle_timeout": "seconds without a command before a connection is closed",
    "line_timeout": "seconds a started command line (or an unread reply) may take",
    "handshake_timeout": "seconds a new connection has to send HELLO",
    "fetch_timeout": "seconds a FETCH waits for a job before answering none",
    "shutdown_grace": "seconds running commands get to finish on SIGTERM",
    "redis_timeout": "seconds Redis may stay silent while it owes a reply before its "
    "connection counts as dead",
    "busy_poll_us": "microseconds the broker waits on the CPU for bytes before it sleeps, "
    "while its waits are short (0: never)",
    "default_reservation": "seconds a fetched job is reserved when it gives no reserve_for",
    "min_reservation": "seconds a reservation lasts at least",
    "max_reservation": "seconds a reservation lasts at most",
    "dead_ttl": "seconds a dead job is kept",
    "scheduler_interval": "seconds between moves of due scheduled and retry jobs",
    "reaper_interval": "seconds between checks for expired reservations",
    "dead_purge_interval": "seconds between purges of old dead and finished jobs",
    "worker_ttl": "seconds without a heartbeat before a worker is dropped",
    "worker_reaper_interval": "seconds between checks for silent workers",
    "reaper_batch": "jobs moved per Redis script call by the periodic loops",
    "finished_ttl": "seconds a finished job stays answerable by jid (0: none kept)",
    "finished_max": "finished jobs kept per queue at most (the oldest go first)",
    "max_result_bytes": "bytes of the JSON result an ACK may carry",
    "max_log_lines": "log lines kept per job (JOB LOG)",
    "max_log_line": "characters kept per log line",
    "max_wait": "seconds a JOB WAIT may wait at most",
    "event_buffer": "events held for a slow EVENTS subscriber before it misses some",
    "batch_ttl": "seconds an uncommitted batch lives",
    "batch_finished_ttl": "seconds a batch's record is kept once both its stages finished",
    "batch_max_age": "seconds after COMMIT a batch that never finishes is purged",
    "history": "archive every job that reaches a final state (HISTORY); turn off with "
    "HOPPER_HISTORY=false or history = false in the file",
    "history_args": "keep each archived job's args in the history; turn off with "
    "HOPPER_HISTORY_ARGS=false or history_args = false in the file",
    "history_interval": "seconds between passes of the history's retention loop",
    "redis_split": "store as on a Redis Cluster (global keys written in a second step, "
    "docs/cluster.md) on one Redis: for testing",
    "push_replicas": "Redis replicas a pushed job must reach before its +OK (WAIT); 0: none",
    "push_replicas_timeout": "seconds a push waits for its push_replicas at most",
    "dashboard_bind": "address of the web dashboard and /metrics, host:port; off: none",
    "dashboard_password": "password of the dashboard (empty: the broker's password)",
}


class SettingError(msgspec.ValidationError):
    """A setting that cannot be used, in one line naming where it came from (a ValueError)."""


def add_flags(command: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """--config and a flag per setting (all, or those named), each with its help."""
    command.add_argument(
        "--config", metavar="FILE", help=f"TOML settings file (env {CONFIG_VARIABLE})"
    )
    for field in FIELDS:
        if names is not None and field.name not in names:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default != "" else "none"
        if field.type is bool:
            default = "on" if field.default else "off"
        text = f"{HELP[field.name]} (default: {default})"
        if field.type is bool:
            command.add_argument(flag, action="store_const", const=True, default=None, help=text)
        else:
            command.add_argument(flag, metavar=field.name.upper(), default=None, help=text)


def env_names(name: str) -> tuple[str, ...]:
    return ENV_ALIASES.get(name, (f"HOPPER_{name.upper()}",))


def load_config(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """Flags, then environment, then the TOML file, then defaults; SettingError (a ValueError)
    names the source of what is wrong."""
    _check_variables(env)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = getattr(args, "config", None) or env.get(CONFIG_VARIABLE)
    if path:
        _read_file(path, values, sources)
    for field in FIELDS:
        for name in env_names(field.name):
            if env.get(name):
                values[field.name], sources[field.name] = env[name], name
                break
        flag = getattr(args, field.name, None)
        if flag is not None:
            values[field.name] = flag
            sources[field.name] = "--" + field.name.replace("_", "-")
    for field in FIELDS:
        if field.name in values:
            values[field.name] = _convert(field, values[field.name], sources[field.name])
    password = values.get("password", "")
    if password.startswith("/"):
        try:
            with open(password) as f:
                values["password"] = f.read().strip()
        except OSError as exc:
            raise SettingError(f"password: cannot read {password}: {exc.strerror}") from None
    try:
        config = msgspec.convert(values, Config, strict=False)
    except msgspec.ValidationError as exc:  # the file's tables: cron, queues, throttles
        raise SettingError(f"{path}: {exc}") from None
    try:
        config.check()
    except ValueError as exc:
        named = str(exc).split(" ", 1)[0].split(".", 1)[0].split("[", 1)[0].rstrip(":")
        where = sources.get(named) or (path if named in FILE_ONLY else None)
        raise SettingError(f"{exc} (from {where})" if where else str(exc)) from None
    return config


def _convert(field: msgspec.structs.FieldInfo, value: Any, source: str) -> Any:
    try:
        return msgspec.convert(value, field.type, strict=False)
    except msgspec.ValidationError:
        kind = KINDS.get(field.type, str(field.type))
        raise SettingError(f"{field.name}: not {kind}: {value!r} (from {source})") from None


def _check_variables(env: Mapping[str, str]) -> None:
    known = {name for field in FIELDS for name in env_names(field.name)}
    known |= OTHER_VARIABLES | {CONFIG_VARIABLE}
    for name in sorted(env):
        if name.startswith("HOPPER_") and name not in known:
            raise SettingError(f"unknown environment variable {name}{_hint(name, known)}")


def _read_file(path: str, values: dict[str, Any], sources: dict[str, str]) -> None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        document = tomllib.loads(raw.decode("utf-8", "replace"))
    except OSError as exc:
        raise SettingError(f"cannot read settings file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{path}: {exc}") from None
    table = "hopper" if isinstance(document.get("hopper"), dict) else None
    settings = document[table] if table else document
    lines = raw.decode("utf-8", "replace").splitlines()
    known = {f.name for f in FIELDS} | set(FILE_ONLY)
    for key in settings:
        if key not in known:
            line = _line_of(lines, table, key)
            raise SettingError(f"{path} line {line}: unknown setting {key!r}{_hint(key, known)}")
    for key in document:
        if table and key not in (table, *FILE_ONLY):
            line = _line_of(lines, None, key)
            raise SettingError(
                f"{path} line {line}: unknown setting {key!r} (settings go in [hopper])"
            )
    for key, value in settings.items():
        values[key] = value
        sources[key] = f"{path} line {_line_of(lines, table, key)}"
    for key in FILE_ONLY:  # `[[cron]]`, `[queues.<name>]`, `[throttles]` at top level
        if key in document and table:
            values[key] = document[key]


def _line_of(lines: list[str], table: str | None, key: str) -> int | str:
    """The line (from 1) that sets `key` in `table` (None: top level), or '?'."""
    current: str | None = None
    pattern = re.compile(
        rf'\s*(?:{re.escape(key)}|"{re.escape(key)}"|\'{re.escape(key)}\')\s*[=.\]]'
    )
    for number, text in enumerate(lines, start=1):
        header = re.match(r"\s*\[+\s*([^\]]+?)\s*\]", text)
        if header:
            name = header.group(1)
            if table is None and pattern.match(name + "]"):
                return number
            current = name
            continue
        if current == table and pattern.match(text):
            return number
    return "?"


def _hint(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
