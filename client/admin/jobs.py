"""`hopper jobs SET` (a page of the retries, scheduled, dead or working jobs, filtered) and
`hopper job JID` (one job's state)."""

import argparse
from collections.abc import Iterator
from typing import Any

import msgspec

from hopper_client.admin.cli import NOT_FOUND, OK, Subcommands, fail
from hopper_client.admin.output import emit_json, stamp, table, when
from hopper_client.client import Client
from hopper_client.operations import JobPage, ListedJob

NAMES = ("jobs", "job")
TARGETS = ("retries", "scheduled", "dead", "working")
MAX_CALLS = 100_000  # JOB LIST calls one command makes at most (each bounded by the broker)
MAX_PAGE = 1000  # jobs asked for per call (the broker's most)


def add_filters(command: argparse.ArgumentParser) -> None:
    """--queue, --jobtype and --error: which jobs of a set (all must match)."""
    command.add_argument(
        "--queue", action="append", default=[], metavar="QUEUE",
        help="only this queue's jobs (repeatable; default: every queue)",
    )  # fmt: skip
    command.add_argument("--jobtype", default="", help="only jobs of this jobtype (exactly)")
    command.add_argument(
        "--error", default="", metavar="TEXT",
        help="only jobs whose last failure (errtype or message) contains TEXT, any case",
    )  # fmt: skip


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    jobs = commands.add_parser(
        "jobs",
        parents=[common],
        help="list the jobs of a set: retries, scheduled, dead or working",
        description="List the jobs of a set across queues: retries, scheduled and working "
        "soonest first, dead newest first. Pass the printed cursor (--cursor) for the next "
        "page. Exit status 1 when no job matched.",
    )
    jobs.add_argument("target", choices=TARGETS, metavar="SET", help=", ".join(TARGETS))
    add_filters(jobs)
    jobs.add_argument(
        "--limit", type=_count, default=20, metavar="N", help="jobs to list (default: 20)"
    )
    jobs.add_argument("--cursor", default="", help="go on after the page that printed it")
    jobs.add_argument(
        "--order", choices=("asc", "desc"), default="",
        help="asc: lowest time first, desc: highest (default: dead desc, the others asc)",
    )  # fmt: skip
    jobs.set_defaults(handler=run_jobs)
    job = commands.add_parser(
        "job",
        parents=[common],
        help="one job's state by jid",
        description="Where a job is and what it did: state, queue, times, attempts, failure, "
        "progress, result. Exit status 1 when the broker does not know the jid.",
    )
    job.add_argument("jid")
    job.set_defaults(handler=run_job)


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"not a number from 1 to 1000000: {text!r}")
    return int(text)


def page(client: Client, args: argparse.Namespace, cursor: str | None, limit: int) -> JobPage:
    """One page of the matching jobs of `args.target` after `cursor`."""
    return client.list_jobs(
        args.target,
        queues=args.queue,
        jobtype=args.jobtype,
        error=args.error,
        order=getattr(args, "order", ""),
        cursor=cursor,
        limit=limit,
    )


def walk(client: Client, args: argparse.Namespace) -> Iterator[list[ListedJob]]:
    """Every matching job of `args.target`, page by page."""
    cursor: str | None = ""
    for _ in range(MAX_CALLS):
        found = page(client, args, cursor, MAX_PAGE)
        yield found.jobs
        cursor = found.cursor
        if cursor is None:
            return


def run_jobs(client: Client, args: argparse.Namespace) -> int:
    listed: list[ListedJob] = []
    cursor: str | None = args.cursor
    for _ in range(MAX_CALLS):
        found = page(client, args, cursor, min(args.limit - len(listed), MAX_PAGE))
        listed += found.jobs
        cursor = found.cursor
        if cursor is None or len(listed) >= args.limit:
            break
    if args.json:
        emit_json({"jobs": [msgspec.to_builtins(entry) for entry in listed], "cursor": cursor})
    else:
        table(
            ("JID", "QUEUE", "JOBTYPE", "WHEN", "RETRIED", "ERROR"),
            [(e.jid, e.queue, e.job.jobtype, when(e.score), *_failure(e)) for e in listed],
            f"no {args.target} jobs matched",
        )
        if cursor:
            print(f"more: --cursor {cursor}")
    return OK if listed else NOT_FOUND


def _failure(entry: ListedJob) -> tuple[Any, str]:
    failure = entry.job.failure
    if failure is None:
        return "", ""
    return failure.retry_count, f"{failure.errtype}: {failure.message}"


def run_job(client: Client, args: argparse.Namespace) -> int:
    state = client.state(args.jid)
    if state.state == "unknown":
        return fail(NOT_FOUND, f"no job {args.jid}")
    if args.json:
        emit_json(state)
        return OK
    shown = msgspec.to_builtins(state)
    for name, value in shown.items():
        if name.endswith("_at") or name == "reserved_until":
            value = stamp(value)
        text = value if isinstance(value, str | int) else msgspec.json.encode(value).decode()
        print(f"{name}: {text}")
    return OK
