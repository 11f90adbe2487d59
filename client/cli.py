"""`hopper-worker MODULE[:NAME]`: run the Worker a module defines (or the worker of its
Tasks registry), until a signal stops it; with `--processes N` (or a recycling flag), N such
workers in child processes under one supervisor (client/supervisor.py).

Exit codes: 0 after a clean shutdown, 1 when the broker refused the worker, 2 for usage
errors (bad arguments, a module that cannot be imported or holds no Worker).
"""

import argparse
import importlib
import logging
import os
import sys

from hopper_client.arguments import LOG_LEVELS, not_negative, positive, seconds
from hopper_client.errors import ClientError
from hopper_client.schema.jobs import QUEUE_NAME
from hopper_client.supervisor import Supervisor
from hopper_client.tasks import Tasks
from hopper_client.url import parse_urls
from hopper_client.worker import Worker

log = logging.getLogger("hopper_client.cli")


class UsageError(Exception):
    """The command line does not name a usable worker."""


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="hopper-worker",
        description="Run the jobs registered on a Worker defined in a Python module. "
        "TERM/INT stop it gracefully (twice: at once), TSTP quiets it.",
    )
    cli.add_argument(
        "target", help="module[:name] of a Worker or a Tasks registry, e.g. myapp.jobs:worker"
    )
    cli.add_argument("-q", "--queues", help="comma-separated queues, highest priority first")
    cli.add_argument("-c", "--concurrency", type=positive, help="jobs run at the same time")
    cli.add_argument(
        "--prefetch", type=not_negative, help="jobs fetched ahead while jobs run short"
    )
    cli.add_argument("--url", help="broker URL (default: $HOPPER_URL, $FAKTORY_URL, localhost)")
    cli.add_argument("--grace", type=seconds, help="seconds running jobs get at shutdown")
    cli.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    cli.add_argument("--processes", type=positive, help="run N worker processes (supervised)")
    cli.add_argument("--max-jobs", type=positive, help="replace a worker process after N jobs")
    cli.add_argument("--max-memory", type=positive, help="replace a worker process above N MiB")
    return cli


def load(target: str) -> Worker:
    """The Worker named by `module[:name]`, or the worker of the Tasks registry it names;
    without a name, the module's only Worker or registry."""
    module_name, _, name = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # not found, or its code failed (SyntaxError, an error it raised)
        raise UsageError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from exc
    if name:
        found = getattr(module, name, None)
        if not isinstance(found, Worker | Tasks):
            raise UsageError(f"{target!r} is not a Worker or a Tasks registry")
    else:
        kinds = Worker | Tasks
        workers = {id(value): value for value in vars(module).values() if isinstance(value, kinds)}
        if len(workers) != 1:
            raise UsageError(
                f"{module_name!r} holds {len(workers)} Workers or registries: "
                f"name one, {target}:NAME"
            )
        found = next(iter(workers.values()))
    return found.worker() if isinstance(found, Tasks) else found


def configure(args: argparse.Namespace) -> Worker:
    """The Worker named on the command line, with the flags applied; UsageError if unusable."""
    worker = load(args.target)
    if args.queues is not None:
        worker.queues = tuple(q for q in args.queues.split(",") if q)
        if not worker.queues or not all(QUEUE_NAME.fullmatch(q) for q in worker.queues):
            raise UsageError(f"--queues: not a list of queue names: {args.queues!r}")
    if args.concurrency:
        worker.concurrency = args.concurrency
    if args.prefetch is not None:
        worker.prefetch = args.prefetch
    if args.url:
        worker.url = args.url
    if args.grace is not None:
        worker.grace = args.grace
    try:
        parse_urls(worker.url, worker.password)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return worker


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        worker = configure(args)
    except UsageError as exc:
        print(f"hopper-worker: {exc}", file=sys.stderr)
        return 2
    if args.processes or args.max_jobs or args.max_memory:
        supervisor = Supervisor(
            sys.argv[1:] if argv is None else argv,
            args.processes or 1,
            max_jobs=args.max_jobs or 0,
            max_memory=args.max_memory or 0,
            grace=worker.grace,
        )
        return supervisor.run()
    try:
        worker.run()
    except ClientError as exc:
        log.error("worker stopped: %s", exc)
        return 1
    return 0
