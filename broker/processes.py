"""Several broker processes behind one port (docs/processes.md): the supervisor `hopper run`
becomes when `processes` is above 1, and the supervised broker's side of its link to it.

The supervisor owns what is single on a host: the data directory's lock and the embedded
redis-server (without redis_url), and the port, which it holds with a bound SO_REUSEPORT socket
that never listens, so a child that restarts always finds it (port 0 is resolved once). It runs
`python -m hopper_broker run` children with the same arguments plus `--reuse-port --processes 1`,
the Redis URL, the port, and the dashboard in the first child only. Each child has a socketpair
link: it writes READY once serving, and its end reads end-of-file when the supervisor dies
(SIGKILL included), on which it stops gracefully. The first child starts alone: when it cannot
start, the supervisor exits with its status (its one-line error is on stderr). Later, a child
that dies is started again, at once if it had served STABLE_AFTER, else after a delay doubling
up to MAX_RESTART_DELAY. SIGTERM and SIGINT are passed to every child (each stops within its
shutdown_grace) and the supervisor exits once they are gone; SIGHUP is passed on (each child
re-reads its settings).
"""

import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable

import trio

from hopper_broker.config import Config
from hopper_broker.options import LINK_FLAG
from hopper_broker.redis_server import EmbeddedRedis
from hopper_broker.sockets import reserve
from hopper_broker.tls import server_context

log = logging.getLogger(__name__)

READY = b"r"  # what a child writes on its link once it serves
STABLE_AFTER = 10.0  # seconds of service after which a dying child is restarted at once
FIRST_RESTART_DELAY = 0.5  # seconds before restarting a child that did not get that far
MAX_RESTART_DELAY = 30.0  # the delay doubles at each such failure up to this
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Child:
    """One broker process and the supervisor's end of its link."""

    def __init__(self, slot: int, process: trio.Process, link: socket.socket) -> None:
        self.slot = slot
        self.process = process
        self.link = link
        self.started = trio.current_time()
        self.served = False
        self.reload = False  # a SIGHUP came while it started: passed on once it serves

    async def ready(self) -> bool:
        """Wait until the child serves (True) or exits before it does (False)."""
        while not self.served:
            await trio.lowlevel.wait_readable(self.link)
            try:
                if self.link.recv(1) != READY:
                    return False
            except BlockingIOError:
                continue
            except OSError:
                return False
            self.served = True
        return True

    def __str__(self) -> str:
        return f"broker process {self.slot + 1} (pid {self.process.pid})"


class Supervisor:
    """Runs `config.process_count` broker processes on one port and one Redis."""

    def __init__(self, config: Config, argv: list[str]) -> None:
        self.config = config
        self.argv = argv  # the `hopper` arguments: "run" and its flags
        self.redis_url = config.redis_url
        self.children: dict[int, Child] = {}
        self._stopping = trio.Event()
        self._starting = trio.CancelScope()
        self._bind = ""

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT; returns the exit status (a failed first start's)."""
        server_context(self.config)  # bad TLS files: a one-line error before anything starts
        with trio.open_signal_receiver(*FORWARDED) as signals:
            async with trio.open_nursery() as root:
                root.start_soon(self._forward, signals)
                status = await self._serve(root)
                root.cancel_scope.cancel()  # the embedded Redis stops (its AOF flushed)
        return status

    async def _serve(self, root: trio.Nursery) -> int:
        config = self.config
        with self._starting:
            if not self.redis_url:
                embedded = EmbeddedRedis(
                    config.data_dir, config.redis_server, config.appendfsync,
                    config.redis_start_timeout,
                )  # fmt: skip
                self.redis_url = await root.start(embedded.run)
        if self._starting.cancelled_caught:
            return 0
        held = reserve(config.host, config.port)
        try:
            port = held[0].getsockname()[1]
            host = f"[{config.host}]" if ":" in config.host else config.host
            self._bind = f"{host}:{port}"
            first = await self._spawn(0)
            if not await first.ready():
                status = await first.process.wait()
                return 0 if self._stopping.is_set() else max(status, 1)
            log.info("%d broker processes on %s", config.process_count, self._bind)
            async with trio.open_nursery() as keepers:
                keepers.start_soon(self._keep, 0, first)
                for slot in range(1, config.process_count):
                    keepers.start_soon(self._keep, slot, None)
        finally:
            for sock in held:
                sock.close()
        return 0

    async def _keep(self, slot: int, child: Child | None) -> None:
        """Keep a broker process running in `slot` until the supervisor stops."""
        failures = 0
        while not self._stopping.is_set():
            if child is None:
                child = await self._spawn(slot)
            served = await child.ready()
            if served and child.reload:  # it may have read the settings before the change
                child.process.send_signal(signal.SIGHUP)
            status = await child.process.wait()
            child.link.close()
            del self.children[slot]
            if self._stopping.is_set():
                return
            stable = served and trio.current_time() - child.started >= STABLE_AFTER
            failures = 0 if stable else failures + 1
            delay = min(FIRST_RESTART_DELAY * 2 ** (failures - 1), MAX_RESTART_DELAY)
            delay = delay if failures else 0.0  # it had served a while: at once
            log.error("%s exited with status %s; restarting in %gs", child, status, delay)
            child = None
            with trio.move_on_after(delay):
                await self._stopping.wait()

    async def _spawn(self, slot: int) -> Child:
        mine, theirs = socket.socketpair()
        mine.setblocking(False)
        overrides = ["--bind", self._bind, "--reuse-port", "--processes", "1"]
        if self.redis_url != self.config.redis_url:  # the embedded one
            overrides += ["--redis-url", self.redis_url]
        if slot:
            overrides += ["--dashboard-bind", "off"]
        overrides += [LINK_FLAG, str(theirs.fileno())]
        cut = self.argv.index("--") if "--" in self.argv else len(self.argv)
        command = [
            sys.executable,
            "-m",
            "hopper_broker",
            *self.argv[:cut],
            *overrides,
            *self.argv[cut:],
        ]
        try:
            process = await trio.lowlevel.open_process(command, pass_fds=(theirs.fileno(),))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        child = self.children[slot] = Child(slot, process, mine)
        log.info("started %s", child)
        if self._stopping.is_set():  # told to stop while it was starting: _forward missed it
            process.terminate()
        return child

    async def _forward(self, signals: AsyncIterator[int]) -> None:
        """Pass each signal to every child; SIGTERM and SIGINT also stop the supervisor. A
        child still starting gets a SIGHUP once it serves (it ignores one before)."""
        async for signum in signals:
            if signum != signal.SIGHUP:
                self._stopping.set()
                self._starting.cancel()
            for child in list(self.children.values()):
                if signum == signal.SIGHUP and not child.served:
                    child.reload = True
                elif child.process.returncode is None:
                    child.process.send_signal(signum)


class Ready:
    """The task status a supervised broker gives App.run: tells the supervisor it serves."""

    def __init__(self, link: socket.socket) -> None:
        self.link = link

    def started(self, value: object = None) -> None:
        self.link.send(READY)


async def follow_supervisor(link: socket.socket, stop: Callable[[], None]) -> None:
    """In a supervised broker: `stop()` when the supervisor is gone (its end of the link
    closed, however it ended)."""
    while True:
        await trio.lowlevel.wait_readable(link)
        try:
            if not link.recv(1):
                break
        except BlockingIOError:
            continue
        except OSError:
            break
    log.warning("the supervisor is gone; stopping")
    stop()
