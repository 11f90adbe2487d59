"""Frozen settings of one broker process, each limit a named default with its reason, and the
one way every component reads the settings in force.

Settings come from command-line flags, then environment variables, then an optional TOML file,
then these defaults; the first that says something wins (see __main__.py).
"""

import ipaddress
import math
import os

import msgspec
import trio

from hopper_broker.cron import CronEntry, compile_all
from hopper_broker.policy import QueueRules, Throttle, check_queue_rules, with_throttles

DEFAULT_PORT = 7419  # the Faktory protocol's port
MAX_PORT = 65535
DEFAULT_BIND = f"127.0.0.1:{DEFAULT_PORT}"  # loopback unless told otherwise
DEFAULT_DASHBOARD = "127.0.0.1:7420"  # the web dashboard and /metrics (docs/dashboard.md)
DASHBOARD_OFF = "off"  # dashboard_bind value that serves no dashboard
DEFAULT_DATA_DIR = ".hopper"  # embedded Redis data, relative to the working directory
# Seconds a starting broker waits for Redis to answer (an external Redis, or the embedded
# redis-server loading its AOF) before it exits with the reason: room for a Redis started at the
# same time or loading a large AOF, yet a wrong URL or password is reported instead of retried
# out of sight. Once connected, the broker reconnects to a Redis that goes away, for ever.
REDIS_START_TIMEOUT = 30.0

MAX_LINE_BYTES = 16 * 1024 * 1024  # one command line (a PUSHB batch can be large)
MAX_CONNECTIONS = 10_000  # above the reference's 2,000 so 2,000 idle clients leave room
FD_RESERVE = 1024  # open files beyond max_connections: handshakes under way, Redis, logs
MAX_HELLO_BYTES = 64 * 1024  # the HELLO line: all a client that has not logged in may send
IDLE_TIMEOUT = 3600.0  # seconds without a complete command before a connection is closed
LINE_TIMEOUT = 60.0  # seconds for a started command line to arrive, or a reply to be taken
HANDSHAKE_TIMEOUT = 2.0  # seconds to send HELLO (reference: DoS mitigation)
FETCH_TIMEOUT = 2.0  # seconds a FETCH waits for a job before answering $-1 (reference)
SHUTDOWN_GRACE = 5.0  # seconds running commands get to finish on SIGTERM
# Broker processes sharing the port (docs/processes.md); 0: one per CPU this process may use,
# less one for the embedded Redis: a broker process at full load keeps one core busy, and so
# does Redis (single-threaded), the ceiling they all share.
PROCESSES = 0
# Seconds Redis may stay silent while it owes a reply before its connection counts as dead
# (a half-open connection: a path that stopped forwarding, a host gone without a reset); also
# the silence after which a quiet connection is probed with a PING. Far above any command the
# broker sends (short scripts, batched scans), yet short enough that clients get an error
# instead of a hang their own timeouts would hit first.
REDIS_TIMEOUT = 10.0
# µs the loop waits on the CPU for a socket's bytes before it sleeps, while its waits are short
# (loop_idle.py): a sleep and wake-up cost more than the Redis call a command waits for.
BUSY_POLL_US = 200
MAX_BUSY_POLL_US = 10_000

DEFAULT_RESERVATION = 1800  # seconds a fetched job is reserved when it does not say
MIN_RESERVATION = 60  # reference floor; tests lower it to see expiry quickly
MAX_RESERVATION = 86_400  # one day, the reference ceiling
DEAD_TTL = 180 * 86_400.0  # seconds a dead job is kept (reference: 180 days)

SCHEDULER_INTERVAL = 1.0  # seconds between moves of due scheduled and retry jobs
REAPER_INTERVAL = 15.0  # seconds between checks for expired reservations (reference)
DEAD_PURGE_INTERVAL = 60.0  # seconds between purges of expired dead jobs (reference)
WORKER_TTL = 60.0  # seconds without a BEAT before a worker is forgotten (reference)
WORKER_REAPER_INTERVAL = 15.0  # seconds between checks for silent workers (reference)
REAPER_BATCH = 100  # jobs moved per script call by the periodic loops

FINISHED_TTL = 86_400.0  # seconds a finished job (done, discarded) stays answerable by jid
FINISHED_MAX = 100_000  # finished jobs kept per queue at most, the oldest dropped first: a
# bound on memory at high throughput (each costs its payload plus ~150 bytes)
MAX_RESULT_BYTES = 64 * 1024  # the JSON result an ACK may carry
PUSH_REPLICAS_TIMEOUT = 1.0  # seconds a push waits for its replicas (push_replicas) at most
MAX_LOG_LINES = 100  # log lines kept per job (JOB LOG), the oldest dropped first
MAX_LOG_LINE = 1000  # characters of one log line kept
MAX_WAIT = 3600.0  # seconds a JOB WAIT may wait for a job to finish
BATCH_TTL = 1800.0  # seconds an uncommitted batch lives (Faktory Enterprise: 30 minutes)
BATCH_FINISHED_TTL = 86_400.0  # seconds a batch's record stays once both its stages finished
BATCH_MAX_AGE = 30 * 86_400.0  # seconds after COMMIT a batch that never finishes is purged:
# beyond 25 retries (about three weeks), so a batch whose jobs still retry is not lost
HISTORY_INTERVAL = 10.0  # seconds between passes of the history's retention loop
# How long the history keeps the jobs that ended in each final state, and how many at most
# (every queue together; the oldest go first): seconds, count. A done job costs about the size
# of its payload plus ~250 bytes (docs/benchmarks.md); these defaults bound the history to a
# few hundred MB at most with small payloads.
RETENTION = {
    "done": (86_400.0, 100_000),
    "dead": (DEAD_TTL, 100_000),
    "discarded": (7 * 86_400.0, 100_000),
    "cancelled": (7 * 86_400.0, 100_000),
    "expired": (7 * 86_400.0, 100_000),
    "replaced": (7 * 86_400.0, 100_000),
}
EVENT_BUFFER = 10_000  # events held for one EVENTS subscriber that reads slowly; beyond,
# new events are dropped and the subscriber is told how many it missed

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")  # Redis Cluster (docs/cluster.md)
# Settings that cannot work at 0 or below (a loop that would spin, a limit that refuses all).
POSITIVE = (
    "max_line_bytes",
    "max_connections",
    "idle_timeout",
    "line_timeout",
    "handshake_timeout",
    "default_reservation",
    "scheduler_interval",
    "reaper_interval",
    "dead_purge_interval",
    "worker_ttl",
    "worker_reaper_interval",
    "reaper_batch",
)

# Settings read once, when the broker starts; a reload (SIGHUP) keeps their old values.
RESTART_ONLY = frozenset(
    {
        "bind",
        "redis_url",
        "data_dir",
        "redis_server",
        "appendfsync",
        "tls_cert",
        "tls_key",
        "redis_start_timeout",
        "dashboard_bind",
        "reuse_port",
        "processes",
        "redis_split",
    }
)


class Retention(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How long the history keeps the jobs that ended in one final state (`ttl`, seconds; 0:
    not at all) and how many at most, every queue together (`max`; 0: none)."""

    ttl: float
    max: int


DEFAULT_RETENTION = {state: Retention(ttl, most) for state, (ttl, most) in RETENTION.items()}


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a broker process is told; see README's configuration table."""

    bind: str = DEFAULT_BIND
    reuse_port: bool = False  # bind with SO_REUSEPORT: other processes may share the port
    processes: int = PROCESSES  # broker processes behind the port; 0: by the CPUs (above)
    password: str = ""
    redis_url: str = ""  # empty: start an embedded redis-server in data_dir
    redis_split: bool = False  # split mode (docs/cluster.md) on one Redis: for tests
    data_dir: str = DEFAULT_DATA_DIR
    redis_server: str = "redis-server"
    appendfsync: str = "everysec"
    redis_start_timeout: float = REDIS_START_TIMEOUT
    tls_cert: str = ""  # PEM certificate chain; with tls_key, the port speaks TLS only
    tls_key: str = ""
    allow_open_bind: bool = False  # allow a non-loopback bind without a password
    log_level: str = "INFO"
    dashboard_bind: str = DEFAULT_DASHBOARD  # `off`: no dashboard
    dashboard_password: str = ""  # empty: the broker's password protects the dashboard

    max_line_bytes: int = MAX_LINE_BYTES
    max_connections: int = MAX_CONNECTIONS
    idle_timeout: float = IDLE_TIMEOUT
    line_timeout: float = LINE_TIMEOUT
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    fetch_timeout: float = FETCH_TIMEOUT
    shutdown_grace: float = SHUTDOWN_GRACE
    redis_timeout: float = REDIS_TIMEOUT
    busy_poll_us: int = BUSY_POLL_US

    default_reservation: int = DEFAULT_RESERVATION
    min_reservation: int = MIN_RESERVATION
    max_reservation: int = MAX_RESERVATION
    dead_ttl: float = DEAD_TTL

    scheduler_interval: float = SCHEDULER_INTERVAL
    reaper_interval: float = REAPER_INTERVAL
    dead_purge_interval: float = DEAD_PURGE_INTERVAL
    worker_ttl: float = WORKER_TTL
    worker_reaper_interval: float = WORKER_REAPER_INTERVAL
    reaper_batch: int = REAPER_BATCH

    finished_ttl: float = FINISHED_TTL
    finished_max: int = FINISHED_MAX
    push_replicas: int = 0  # Redis replicas a pushed job must reach before +OK (WAIT); 0: none
    push_replicas_timeout: float = PUSH_REPLICAS_TIMEOUT
    max_result_bytes: int = MAX_RESULT_BYTES
    max_log_lines: int = MAX_LOG_LINES
    max_log_line: int = MAX_LOG_LINE
    max_wait: float = MAX_WAIT
    event_buffer: int = EVENT_BUFFER
    batch_ttl: float = BATCH_TTL
    batch_finished_ttl: float = BATCH_FINISHED_TTL
    batch_max_age: float = BATCH_MAX_AGE
    history: bool = True  # archive every job that reaches a final state (HISTORY)
    history_args: bool = True  # keep each archived job's args (off: the rest of its payload)
    history_interval: float = HISTORY_INTERVAL
    # `[retention.<state>]` in the TOML file: ttl (seconds) and max per final state
    retention: dict[str, Retention] = msgspec.field(default_factory=dict)
    cron: tuple[CronEntry, ...] = ()  # periodic jobs (`[[cron]]` in the TOML file only)
    queues: dict[str, QueueRules] = msgspec.field(default_factory=dict)  # `[queues.<name>]`
    throttles: dict[str, Throttle] = msgspec.field(default_factory=dict)  # Enterprise's table

    @property
    def host(self) -> str:
        return split_bind(self.bind)[0]

    @property
    def port(self) -> int:
        return split_bind(self.bind)[1]

    @property
    def process_count(self) -> int:
        """How many broker processes to run: `processes`, or one per CPU this process may use,
        less one for the embedded Redis (none with redis_url), at least one."""
        embedded = 0 if self.redis_url else 1
        return self.processes or max(1, len(os.sched_getaffinity(0)) - embedded)

    @property
    def web_password(self) -> str:
        """The password of the dashboard: its own, else the broker's ('' for none)."""
        return self.dashboard_password or self.password

    @property
    def reservation(self) -> tuple[int, int, int]:
        """(default, minimum, maximum) reservation seconds, as the fetch script takes them."""
        return self.default_reservation, self.min_reservation, self.max_reservation

    def check(self) -> None:
        """Raise ValueError for settings that cannot work (alone or together)."""
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        host, _ = checked_bind("bind", self.bind)
        if not self.password and not self.allow_open_bind and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host} without a password; set a password or "
                "allow_open_bind (--allow-open-bind) to accept connections from anywhere"
            )
        if self.dashboard_bind != DASHBOARD_OFF:
            web_host, _ = checked_bind("dashboard_bind", self.dashboard_bind)
            if not self.web_password and not self.allow_open_bind and not is_loopback(web_host):
                raise ValueError(
                    f"refusing to serve the dashboard on {web_host} without a password; set "
                    "password or dashboard_password, or allow_open_bind"
                )
        if self.processes < 0:
            raise ValueError("processes must not be negative (0: one per CPU)")
        if self.min_reservation < 1 or self.min_reservation > self.max_reservation:
            raise ValueError("min_reservation must be between 1 and max_reservation")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together")
        if self.redis_start_timeout <= 0:
            raise ValueError("redis_start_timeout must be positive")
        if self.appendfsync not in ("always", "everysec", "no"):
            raise ValueError("appendfsync must be always, everysec or no")
        if self.redis_timeout <= 0:
            raise ValueError("redis_timeout must be positive")
        if not 0 <= self.busy_poll_us <= MAX_BUSY_POLL_US:
            raise ValueError(f"busy_poll_us must be between 0 and {MAX_BUSY_POLL_US:,}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.redis_url and not self.redis_url.startswith(REDIS_SCHEMES + CLUSTER_SCHEMES):
            raise ValueError(
                f"redis_url must start with {', '.join(REDIS_SCHEMES + CLUSTER_SCHEMES)}: "
                f"{self.redis_url}"
            )
        for name in POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("fetch_timeout", "shutdown_grace", "dead_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("finished_ttl", "finished_max", "max_log_lines"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("batch_ttl", "batch_finished_ttl", "batch_max_age"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("max_result_bytes", "max_log_line", "max_wait", "event_buffer"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.push_replicas < 0 or self.push_replicas_timeout <= 0:
            raise ValueError("push_replicas must not be negative, push_replicas_timeout positive")
        if self.history_interval <= 0:
            raise ValueError("history_interval must be positive")
        for state, rule in self.retention.items():
            if state not in DEFAULT_RETENTION:
                raise ValueError(
                    f"retention.{state}: not a final state (one of {', '.join(DEFAULT_RETENTION)})"
                )
            if not 0 <= rule.ttl < math.inf or rule.max < 0:
                raise ValueError(
                    f"retention.{state}: ttl must be a finite number of seconds and max a "
                    "count, neither negative"
                )
        compile_all(self.cron)
        check_queue_rules(self.queue_rules())

    @property
    def history_mode(self) -> str:
        """How the scripts archive a job that ends (archive() in scripts/lib_history.lua): ''
        not at all, 'a' with its args, 'n' without them."""
        if not self.history:
            return ""
        return "a" if self.history_args else "n"

    def retention_of(self, state: str) -> Retention:
        """The history's retention for jobs that ended in `state` (the file's, or the default)."""
        return self.retention.get(state) or DEFAULT_RETENTION[state]

    def queue_rules(self) -> dict[str, QueueRules]:
        """The queue settings the file gives: `[queues.<name>]` and `[throttles]`."""
        return with_throttles(self.queues, self.throttles)


def split_bind(bind: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `:port` or `host` into (host, port)."""
    host, sep, port = bind.rpartition(":")
    if not sep or "]" in port:
        host, port = bind, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def checked_bind(setting: str, bind: str) -> tuple[str, int]:
    """split_bind, raising ValueError naming `setting` for an address that cannot work."""
    try:
        host, port = split_bind(bind)
    except ValueError:
        raise ValueError(f"{setting}: not host:port: {bind!r}") from None
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"{setting}: port {port} is not from 0 to {MAX_PORT}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings:
    """The settings in force. Every component holds this object and calls it at each use, so a
    reload (SIGHUP) reaches all of them at once."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._reloaded = trio.Event()

    def __call__(self) -> Config:
        return self._config

    async def reloaded(self) -> None:
        """Wait for the next reload."""
        await self._reloaded.wait()

    def reload(self, config: Config) -> list[str]:
        """Take new settings; those only a restart can change keep their values. Returns the
        names of those that were asked to change."""
        current = self._config
        kept = sorted(n for n in RESTART_ONLY if getattr(config, n) != getattr(current, n))
        merged = msgspec.structs.replace(config, **{n: getattr(current, n) for n in kept})
        merged.check()
        self._config = merged
        self._reloaded.set()
        self._reloaded = trio.Event()
        return kept
