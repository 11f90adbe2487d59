"""Start, watch and stop the embedded redis-server child (unix socket, AOF on)."""

import contextlib
import logging
import os
import re
import signal
from pathlib import Path

import trio

from hopper_broker.config import REDIS_START_TIMEOUT
from hopper_broker.datadir import locked
from hopper_broker.errors import StartError
from hopper_broker.store.address import Address, ReplyError
from hopper_broker.store.connection import CONNECTION_ERRORS

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # seconds for redis-server to write its AOF and exit on SIGTERM
RESTART_DELAY = 1.0  # seconds before restarting a redis-server that died


class StartFailed(StartError):
    """redis-server exited, or did not answer in time, before it accepted commands."""


class EmbeddedRedis:
    """A redis-server owned by this broker, kept running until the broker stops.

    The broker owns the data dir (datadir.locked) for as long as this runs. If the broker is
    killed (SIGKILL) its redis-server lives on with all the data; the next broker to own the data
    dir stops it gently (SIGTERM: the AOF is flushed) and starts anew. `start_timeout` bounds
    each start (the AOF loaded).
    """

    def __init__(
        self,
        data_dir: str,
        binary: str = "redis-server",
        appendfsync: str = "everysec",
        start_timeout: float = REDIS_START_TIMEOUT,
    ):
        self.dir = Path(data_dir).resolve()
        self.binary = binary
        self.appendfsync = appendfsync
        self.start_timeout = start_timeout
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.url = f"unix://{self.socket}"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.dir / "redis.log"),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
        ]  # fmt: skip

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the data dir and run redis-server in it, restarting it if it dies; reports the URL
        once it serves commands (its AOF loaded). Raises StartError when the data dir is in use
        or the first start fails."""
        with locked(self.dir):
            await self._stop_leftover()
            started = False
            while True:
                process = await trio.lowlevel.open_process(self.command(), stdin=None)
                try:
                    await self._wait_ready(process)
                    if not started:
                        log.info("embedded redis-server pid %d at %s", process.pid, self.socket)
                        task_status.started(self.url)
                        started = True
                    code = await process.wait()
                    log.error("embedded redis-server exited with %s; restarting", code)
                except StartFailed as exc:
                    if not started:
                        raise  # a first start that fails is a setup error: the broker stops
                    log.error("embedded redis-server did not start again (%s); retrying", exc)
                finally:
                    with trio.CancelScope(shield=True):
                        await _stop(process)
                await trio.sleep(RESTART_DELAY)

    async def _wait_ready(self, process: trio.Process) -> None:
        with trio.move_on_after(self.start_timeout):
            while True:
                if process.poll() is not None:
                    raise StartFailed(f"redis-server exited at start; see {self.dir / 'redis.log'}")
                if await answers_ping(self.url):
                    return
                await trio.sleep(0.02)
        raise StartFailed(
            f"redis-server did not answer within {self.start_timeout:g}s; "
            f"see {self.dir / 'redis.log'}"
        )

    async def _stop_leftover(self) -> None:
        """Stop the redis-server a killed broker left running on this data dir (the lock, now
        ours, proves that broker dead); refuse to start beside a Redis on the socket that is not
        provably that redis-server."""
        pid = self._leftover()
        if pid:
            log.warning("stopping leftover redis-server pid %d", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                while Path(f"/proc/{pid}").exists():
                    await trio.sleep(0.05)
        if await answers_ping(self.url):
            raise StartError(
                f"{self.socket} is served by a process not known as this data directory's "
                "redis-server; stop it, then start again"
            )

    def _leftover(self) -> int:
        """The pidfile's pid if that process is a redis-server on this data dir's socket (its
        command line, or the title redis-server gives itself, names both); else 0."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return 0
        words = os.fsdecode(cmdline.rstrip(b"\0").replace(b"\0", b" "))
        program = Path(words.split(" ", 1)[0]).name
        on_socket = re.search(rf"(?:^| |unixsocket:){re.escape(str(self.socket))}(?: |$)", words)
        return pid if program in ("redis-server", Path(self.binary).name) and on_socket else 0


async def answers_ping(url: str) -> bool:
    """Whether Redis accepts commands: it answers PING with PONG, not with LOADING."""
    try:
        return bool(await Address(url).ask("PING") == b"PONG")
    except (*CONNECTION_ERRORS, ReplyError):
        return False


async def _stop(process: trio.Process) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    with trio.move_on_after(STOP_TIMEOUT):
        await process.wait()
        return
    process.kill()
    await process.wait()
