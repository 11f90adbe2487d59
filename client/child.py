"""One worker process of a Supervisor (`python -m hopper_client.child`, started by the supervisor).

It runs the Worker that `hopper-worker ARGV` would run, under the wid the supervisor chose,
follows the life-cycle moves the supervisor sends over its link (client/supervisor.py), and
retires at its recycling limits: it tells the supervisor, stops fetching, lets its jobs
finish (recycling interrupts none), then exits.

TSTP, TERM and INT sent to the child itself quiet or terminate it; only the supervisor's
FORCE skips the grace (a TERM sent to the whole process tree reaches a child twice: from the
sender and from its supervisor).
"""

import argparse
import logging
import os
import signal
import socket
import sys

import trio

from hopper_client import cli
from hopper_client.errors import ClientError
from hopper_client.execution import Next, rss_kb
from hopper_client.schema.jobs import Job
from hopper_client.supervisor import (
    EXIT_REFUSED,
    EXIT_USAGE,
    FORCE,
    QUIET,
    RETIRING,
    TERMINATE,
    receive,
    send,
)
from hopper_client.worker import Worker

log = logging.getLogger("hopper_client.supervisor")

DRAIN_POLL = 0.1  # seconds between looks at a retiring worker's busy slots


class Retirement:
    """Counts the jobs run and watches memory after each; `due` once a limit is passed."""

    def __init__(self, max_jobs: int, max_memory: int) -> None:
        self.max_jobs = max_jobs
        self.max_memory = max_memory  # MiB
        self.jobs = 0
        self.due = trio.Event()

    async def middleware(self, job: Job, call_next: Next) -> None:
        """Around every job (the innermost middleware)."""
        try:
            await call_next()
        finally:
            self.jobs += 1
            if not self.due.is_set() and (reason := self._reason()):
                log.info("worker process %d: retiring %s", os.getpid(), reason)
                self.due.set()

    def _reason(self) -> str:
        if self.max_jobs and self.jobs >= self.max_jobs:
            return f"after {self.jobs} jobs"
        if self.max_memory and (kib := rss_kb()) > self.max_memory * 1024:
            return f"at {kib // 1024} MiB resident (limit {self.max_memory} MiB)"
        return ""

    async def run(self, worker: Worker, link: socket.socket) -> None:
        """Once due: tell the supervisor, stop fetching, wait for the jobs, terminate."""
        await self.due.wait()
        send(link, RETIRING)
        worker.quiet()
        while worker.active_slots:
            await trio.sleep(DRAIN_POLL)
        worker.terminate()


def parser() -> argparse.ArgumentParser:
    child = argparse.ArgumentParser(prog="python -m hopper_client.child")
    child.add_argument("--link", type=int, required=True, help="fd of the supervisor's link")
    child.add_argument("--wid", required=True)
    child.add_argument("--max-jobs", type=int, default=0)
    child.add_argument("--max-memory", type=int, default=0, help="MiB")
    child.add_argument("argv", nargs=argparse.REMAINDER, help="-- hopper-worker arguments")
    return child


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    link = socket.socket(fileno=args.link)
    link.set_inheritable(False)  # processes a job starts do not hold the supervisor's link
    link.setblocking(False)
    options = cli.parser().parse_args(args.argv[1:] if args.argv[:1] == ["--"] else args.argv)
    logging.basicConfig(
        level=options.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
    try:
        worker = cli.configure(options)
    except cli.UsageError as exc:
        print(f"hopper-worker: {exc}", file=sys.stderr)
        return EXIT_USAGE
    worker.wid = args.wid
    retirement = Retirement(args.max_jobs, args.max_memory)
    if args.max_jobs or args.max_memory:
        worker.use(retirement.middleware)
    try:
        trio.run(_serve, worker, link, retirement)
    except* ClientError as refused:  # the only ClientError a worker stops for
        log.error("worker stopped: %s", _first(refused))
        sys.exit(EXIT_REFUSED)
    finally:
        link.close()
    return 0


def _first(group: BaseExceptionGroup[ClientError]) -> BaseException:
    first: BaseException = group
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


async def _serve(worker: Worker, link: socket.socket, retirement: Retirement) -> None:
    moves = Moves(worker)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_work, worker, nursery.cancel_scope)
        # These act only after a wake-up, by then the worker's first step has run: it runs.
        nursery.start_soon(moves.obey_signals)
        nursery.start_soon(moves.obey_supervisor, link)
        nursery.start_soon(retirement.run, worker, link)


async def _work(worker: Worker, done: trio.CancelScope) -> None:
    await worker.arun()
    done.cancel()


class Moves:
    """Applies the moves asked of the worker by signals and by the supervisor, each once."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.asked: set[bytes] = set()

    async def obey_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTSTP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.move(QUIET if signum == signal.SIGTSTP else TERMINATE)

    async def obey_supervisor(self, link: socket.socket) -> None:
        while data := await receive(link):
            for message in data:
                self.move(bytes([message]))
        log.warning("worker process %d: the supervisor is gone: terminating", os.getpid())
        self.move(TERMINATE)

    def move(self, message: bytes) -> None:
        """QUIET, TERMINATE (the grace), FORCE (no grace); a move asked again is ignored."""
        if message in self.asked:
            return
        try:
            if message == QUIET:
                self.worker.quiet()
            elif message in (TERMINATE, FORCE):
                if TERMINATE not in self.asked and self.worker.state != "terminate":
                    self.worker.terminate()
                    self.asked.add(TERMINATE)
                if message == FORCE:
                    self.worker.terminate()  # terminating already: skips the grace
        except RuntimeError:
            return  # the worker has stopped
        self.asked.add(message)


if __name__ == "__main__":
    sys.exit(main())
