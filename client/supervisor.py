"""Process workers: N worker processes from one command, under one supervisor.

Each child is `python -m hopper_client.child ...`, a fresh interpreter started by exec (no socket,
thread or event loop of the supervisor's crosses over: only stdout, stderr and its end of a
socket pair, the *link*) that runs the Worker `hopper-worker ARGV` would run, with its own
connections and a wid of its own (a new one for each child started). The child is in a process
group of its own, so a terminal's Ctrl-C reaches the supervisor alone, which passes it on once.

Over the link the supervisor sends the life-cycle moves, one byte each: QUIET, TERMINATE and
FORCE (a second TERM/INT: no more grace); the child's end reading EOF means the supervisor is
gone, and the child terminates. The child sends RETIRING when it reached its recycling limit:
the supervisor starts its replacement at once, while the old one finishes its jobs and exits.

A child that exits while the supervisor runs is replaced (at once, then with backoff when it
keeps dying young), unless it exited on purpose (code 0: the broker or a signal of its own
stopped it) or for a reason another child would share (a usage error, the broker refusing it:
then the supervisor stops every child and exits with that error). The jobs of a child that
crashed or was killed come back through the broker's liveness rules (`worker_ttl`).
"""

import contextlib
import functools
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence

import trio

from hopper_client.backoff import Backoff
from hopper_client.commands import WorkerState
from hopper_client.jobs import new_jid
from hopper_client.shift import REPORT_TIMEOUT
from hopper_client.worker import GRACE

log = logging.getLogger("hopper_client.supervisor")

QUIET, TERMINATE, FORCE, RETIRING = b"q", b"t", b"f", b"r"  # the link's messages
EXIT_USAGE = 2  # a child's exit code: the command line names no usable worker
EXIT_REFUSED = 3  # a child's exit code: the broker refused the worker (e.g. its password)
STABLE = 10.0  # seconds a child must live for its next restart to be immediate
STOP_MARGIN = 10.0  # seconds past a child's grace (and report time) before it is killed


class Child:
    """One worker process, its link and its wid."""

    __slots__ = ("code", "done", "link", "process", "retiring", "slot", "started", "wid")

    def __init__(self, slot: int, process: trio.Process, link: socket.socket, wid: str) -> None:
        self.slot = slot
        self.process = process
        self.link = link
        self.wid = wid
        self.started = trio.current_time()
        self.retiring = False
        self.code = 0  # its exit code once it exited (-N: killed by signal N)
        self.done = trio.Event()  # it exited or is retiring: its slot may be filled again

    def tell(self, message: bytes) -> None:
        """Send a life-cycle move (lost if the child is gone: it needs none then)."""
        send(self.link, message)

    def __str__(self) -> str:
        return f"child {self.slot} (pid {self.process.pid}, wid {self.wid})"


class Supervisor:
    """Keeps `processes` children running `hopper-worker ARGV` (ARGV starts with the worker's
    `module[:name]`), passing TERM, INT and TSTP on to all of them.

    `max_jobs` / `max_memory` (MiB, resident) recycle a child: past either (checked after each
    job), it stops fetching, is replaced at once, and exits once its jobs are done. `grace` is
    the children's (their Worker's `grace`): a child still running that long (plus the time
    to report) after TERM is killed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        processes: int,
        *,
        max_jobs: int = 0,
        max_memory: int = 0,
        grace: float = GRACE,
    ) -> None:
        if processes < 1 or max_jobs < 0 or max_memory < 0 or not argv:
            raise ValueError("a Supervisor needs argv, processes >= 1, max_jobs/max_memory >= 0")
        self.argv = list(argv)
        self.processes = processes
        self.max_jobs = max_jobs
        self.max_memory = max_memory
        self.grace = grace
        self.state: WorkerState = "running"
        self.exit_code = 0
        self.children: set[Child] = set()  # alive, retiring ones included
        self._stopping = trio.Event()  # no more children are started
        self._outer: trio.Nursery | None = None

    def run(self) -> int:
        """Supervise until the children are stopped and gone; the exit code for the command
        (0, 1 when the broker refused the worker, 2 for a usage error)."""
        main = threading.current_thread() is threading.main_thread()
        return trio.run(functools.partial(self.arun, handle_signals=main))

    async def arun(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> int:
        """`run()` for trio programs; `handle_signals` traps TSTP, TERM and INT."""
        async with trio.open_nursery() as self._outer:
            if handle_signals:
                await self._outer.start(self._watch_signals)
            async with trio.open_nursery() as slots:
                for slot in range(self.processes):
                    slots.start_soon(self._keep, slot, slots)
                task_status.started()
            self._outer.cancel_scope.cancel()
        log.info("supervisor: stopped")
        return self.exit_code

    def quiet(self) -> None:
        """Quiet every child (they stop fetching); no child is started any more."""
        if self.state == "running":
            log.info("supervisor: quiet")
            self.state = "quiet"
            self._stopping.set()
            self._tell_all(QUIET)

    def terminate(self) -> None:
        """Terminate every child (each gives its jobs its grace); again: without grace."""
        if self.state == "terminate":
            self._tell_all(FORCE)
            return
        log.info("supervisor: terminating %d children", len(self.children))
        self.state = "terminate"
        self._stopping.set()
        self._tell_all(TERMINATE)
        if self._outer is not None:
            self._outer.start_soon(self._kill_stragglers)

    def _tell_all(self, message: bytes) -> None:
        for child in self.children:
            child.tell(message)

    async def _keep(self, slot: int, nursery: trio.Nursery) -> None:
        """Keep a child running in this slot while the supervisor runs."""
        backoff = Backoff()
        while self.state == "running":
            child = await self._spawn(slot)
            nursery.start_soon(self._watch, child)
            await child.done.wait()
            if child.retiring:
                backoff.reset()
                continue
            if not self._replace(child):
                return
            if trio.current_time() - child.started >= STABLE:
                backoff.reset()
            with trio.move_on_after(backoff.delay(RuntimeError(str(child)))):
                await self._stopping.wait()

    async def _spawn(self, slot: int) -> Child:
        ours, theirs = socket.socketpair()
        wid = new_jid()
        command = [  # `--wid=`: a wid may start with "-"
            sys.executable, "-m", "hopper_client.child", f"--link={theirs.fileno()}",
            f"--wid={wid}", f"--max-jobs={self.max_jobs}", f"--max-memory={self.max_memory}",
            "--", *self.argv,
        ]  # fmt: skip
        try:
            process = await trio.lowlevel.open_process(
                command, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), process_group=0
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        child = Child(slot, process, ours, wid)
        self.children.add(child)
        log.info("supervisor: %s started", child)
        if self.state != "running":  # stopped while it was being started
            child.tell(QUIET if self.state == "quiet" else TERMINATE)
        return child

    async def _watch(self, child: Child) -> None:
        """Follow a child until it exits: its messages, then its exit."""
        try:
            async with trio.open_nursery() as listening:
                listening.start_soon(self._listen, child)
                code = child.code = await child.process.wait()
                listening.cancel_scope.cancel()
        finally:  # also when the supervisor is cancelled: the child sees its link close
            child.link.close()
            self.children.discard(child)
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(level, "supervisor: %s %s", child, how)
        child.done.set()

    async def _listen(self, child: Child) -> None:
        while data := await receive(child.link):
            if RETIRING in data and not child.retiring:
                log.info("supervisor: %s is retiring: starting another", child)
                child.retiring = True
                child.done.set()

    def _replace(self, child: Child) -> bool:
        """Whether the child that exited is to be replaced; stops everything on an error
        that any child would meet."""
        code = child.code
        if code in (EXIT_USAGE, EXIT_REFUSED):
            log.error("supervisor: %s could not run the worker: stopping", child)
            self.exit_code = self.exit_code or (2 if code == EXIT_USAGE else 1)
            self.terminate()
            return False
        if self.state != "running":
            return False
        if code == 0:
            log.info("supervisor: %s was stopped on purpose: not replaced", child)
            return False
        log.warning("supervisor: %s is gone: starting another", child)
        return True

    async def _kill_stragglers(self) -> None:
        """Kill the children still running well past their grace."""
        await trio.sleep(self.grace + REPORT_TIMEOUT + STOP_MARGIN)
        for child in list(self.children):
            log.warning("supervisor: %s outlived its grace: killing it", child)
            child.process.kill()

    async def _watch_signals(self, task_status: trio.TaskStatus[None]) -> None:
        wanted = (signal.SIGTSTP, signal.SIGTERM, signal.SIGINT)
        with trio.open_signal_receiver(*wanted) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGTSTP:
                    self.quiet()
                else:
                    self.terminate()


def send(link: socket.socket, message: bytes) -> None:
    """Send over a link (non-blocking); nothing happens when the other end is gone."""
    with contextlib.suppress(OSError):
        link.send(message)


async def receive(link: socket.socket) -> bytes:
    """The next messages from a link (non-blocking); b"" once the other end is gone."""
    while True:
        await trio.lowlevel.wait_readable(link)
        try:
            return link.recv(64)
        except BlockingIOError:
            continue
        except OSError:
            return b""
