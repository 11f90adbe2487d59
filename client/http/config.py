"""The HTTP worker's TOML file: where each jobtype goes, with what credentials and time limits.

```toml
url = "tcp://localhost:7419"      # the broker (default: $HOPPER_URL, $FAKTORY_URL, localhost)
queues = ["webhooks"]
concurrency = 20                  # requests (and callbacks awaited) at once
timeout = 10                      # seconds per request, unless its route says otherwise

[default]                         # jobtypes without a route of their own (none: they fail)
url = "https://api.example.com/jobs"

[routes.send_email]
url = "https://mailer.example.com/send"
timeout = 5
concurrency = 4                   # requests to this route at once (default: no limit of its own)
auth = { bearer_env = "MAILER_TOKEN" }
```
"""

import base64
import math
import os
import re
import tomllib
from typing import NamedTuple

import msgspec
import trio

from hopper_client.schema.jobs import QUEUE_NAME

DEFAULT_TIMEOUT = 30.0  # seconds a request may take, all of it
MAX_ERROR_BODY = 900  # characters of an answer kept in the error (the broker keeps 1,000)
MAX_PORT = 65535
HEADER_VALUE = re.compile(r"[\x20-\x7e]*")  # printable ASCII: what a header value may hold


class ConfigError(Exception):
    """The file is missing, not TOML, or says something that cannot work."""


class Auth(msgspec.Struct, forbid_unknown_fields=True):
    """A bearer token, or a user and password (basic); each secret from the file or from the
    environment variable named by its `_env` field."""

    bearer: str | None = None
    bearer_env: str | None = None
    username: str | None = None
    password: str | None = None
    password_env: str | None = None

    def header(self, where: str) -> str:
        """The Authorization header's value."""
        token = _secret(self.bearer, self.bearer_env, f"{where}.bearer")
        if token is not None:
            if self.username is not None or self.password or self.password_env:
                raise ConfigError(f"{where}: give a bearer token or a username, not both")
            return f"Bearer {token}"
        if self.username is None:
            raise ConfigError(f"{where}: needs bearer, bearer_env or username")
        password = _secret(self.password, self.password_env, f"{where}.password") or ""
        pair = f"{self.username}:{password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


def _header_value(value: str, where: str) -> str:
    """A value that can go in a header line; a stray newline (a secret read from a file) or
    another control character is refused naming the setting, never showing the value."""
    if not HEADER_VALUE.fullmatch(value):
        raise ConfigError(f"{where}: holds a control or non-ASCII character (a newline?)")
    return value


class Route(msgspec.Struct, forbid_unknown_fields=True):
    """Where the jobs of a jobtype are POSTed."""

    url: str
    timeout: float | None = None  # seconds (default: the file's `timeout`)
    auth: Auth | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    accepted: bool = False  # a 202 answer means: the outcome comes later, by callback
    concurrency: int | None = None  # requests to this route at once (None: the worker's only)


class Callback(msgspec.Struct, forbid_unknown_fields=True):
    """The endpoint where downstreams report the outcome of accepted jobs."""

    listen: str = "127.0.0.1:7421"  # host:port (port 0: any free port; 7420: the dashboard)
    url: str = ""  # base URL downstreams reach it at (default: http://<listen>)
    secret: str | None = None  # what they send as `Authorization: Bearer <secret>`
    secret_env: str | None = None
    wait: float = 3600.0  # seconds to wait for a callback before failing the job
    extend: float = 60.0  # seconds between extensions of the job's reservation while waiting

    def address(self) -> tuple[str, int]:
        """`listen` as (host, port); ConfigError when it is not host:port."""
        host, _, port = self.listen.rpartition(":")
        if not port.isascii() or not port.isdigit() or int(port) > MAX_PORT:
            raise ConfigError(
                f"callback.listen: not host:port (port 0 to {MAX_PORT}): {self.listen!r}"
            )
        return host.strip("[]"), int(port)


class HttpConfig(msgspec.Struct, forbid_unknown_fields=True):
    """The whole file."""

    url: str | None = None
    queues: list[str] = msgspec.field(default_factory=lambda: ["default"])
    concurrency: int = 10
    timeout: float = DEFAULT_TIMEOUT
    max_error_body: int = MAX_ERROR_BODY
    default: Route | None = None
    routes: dict[str, Route] = msgspec.field(default_factory=dict)
    callback: Callback | None = None


class Target(NamedTuple):
    """A route made ready to use: its URL, timeout, headers (credentials in), mode, and the
    limiter of its own concurrency (None: none)."""

    url: str
    timeout: float
    headers: dict[str, str]
    accepted: bool
    limiter: trio.CapacityLimiter | None = None


class Plan(NamedTuple):
    """A checked configuration: the targets by jobtype, the default's, the callback secret."""

    config: HttpConfig
    targets: dict[str, Target]
    default: Target | None
    secret: str | None

    def target(self, jobtype: str) -> Target | None:
        return self.targets.get(jobtype, self.default)


def load(path: str) -> Plan:
    """Read and check the file, taking secrets from the environment now."""
    return plan(read(path))


def read(path: str) -> HttpConfig:
    """The file as it is, unchecked (`plan` checks it)."""
    try:
        with open(path, "rb") as file:
            raw = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return msgspec.convert(raw, HttpConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def plan(config: HttpConfig) -> Plan:
    """Check a configuration and resolve its credentials."""
    if not config.queues or not all(QUEUE_NAME.fullmatch(q) for q in config.queues):
        raise ConfigError(f"queues: not a list of queue names: {config.queues!r}")
    if config.concurrency < 1 or not _seconds(config.timeout):
        raise ConfigError("needs a concurrency of 1 or more and a timeout above 0")
    routes = config.routes.items()
    targets = {name: _target(route, config, f"routes.{name}") for name, route in routes}
    default = None if config.default is None else _target(config.default, config, "default")
    accepted = any(t.accepted for t in [*targets.values(), default] if t is not None)
    secret = None
    if config.callback is not None:
        secret = _secret(config.callback.secret, config.callback.secret_env, "callback.secret")
        if not secret:
            raise ConfigError("callback: needs secret or secret_env")
        _header_value(secret, "callback.secret")
        if not (_seconds(config.callback.wait) and _seconds(config.callback.extend)):
            raise ConfigError("callback: wait and extend must be above 0")
        config.callback.address()
    elif accepted:
        raise ConfigError("a route with accepted = true needs a [callback] section")
    return Plan(config, targets, default, secret)


def _target(route: Route, config: HttpConfig, where: str) -> Target:
    if not route.url.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: not an http(s) URL: {route.url!r}")
    timeout = config.timeout if route.timeout is None else route.timeout
    if not _seconds(timeout):
        raise ConfigError(f"{where}.timeout: must be above 0")
    headers = {k: _header_value(v, f"{where}.headers.{k}") for k, v in route.headers.items()}
    if route.auth is not None:
        auth = f"{where}.auth"
        headers["Authorization"] = _header_value(route.auth.header(auth), auth)
    if route.concurrency is not None and route.concurrency < 1:
        raise ConfigError(f"{where}.concurrency: must be 1 or more")
    limiter = None if route.concurrency is None else trio.CapacityLimiter(route.concurrency)
    return Target(route.url, timeout, headers, route.accepted, limiter)


def _seconds(value: float) -> bool:
    """Whether `value` is a finite number of seconds above 0."""
    return 0 < value < math.inf


def _secret(value: str | None, env: str | None, where: str) -> str | None:
    """A secret given in the file, or read from the named environment variable."""
    if value is not None and env is not None:
        raise ConfigError(f"{where}: give the value or the variable, not both")
    if env is None:
        return value
    found = os.environ.get(env)
    if found is None:
        raise ConfigError(f"{where}: the environment variable {env} is not set")
    return found
