"""`hopper workers` (the connected worker processes and the jobs they hold) and `hopper
quiet|terminate` (ask workers to stop fetching, or to stop)."""

import argparse
from typing import Any

from hopper_client.admin.cli import NOT_FOUND, OK, Subcommands, UsageError, fail
from hopper_client.admin.output import emit_json, stamp, table
from hopper_client.client import Client
from hopper_client.errors import ServerError

NAMES = ("workers", "quiet", "terminate")
SIGNALS = {  # state -> (help, what the worker is asked)
    "quiet": ("ask workers to fetch no more jobs", "stop fetching jobs and finish the running "
              "ones (the process keeps running)"),
    "terminate": ("ask workers to stop and exit", "stop fetching, finish or fail the running "
                  "jobs within their grace time, and exit"),
}  # fmt: skip


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    workers = commands.add_parser(
        "workers",
        parents=[common],
        help="the connected worker processes and the jobs they hold",
        description="One line per worker process (wid, host, pid, state, jobs held, last "
        "heartbeat), then the jobs each holds with since when.",
    )
    workers.set_defaults(handler=show_workers)
    for name, (short, text) in SIGNALS.items():
        signal = commands.add_parser(
            name,
            parents=[common],
            help=short,
            description=f"Ask worker processes to {text}, as Faktory's Web UI does: each is "
            "told at its next heartbeat. Exit status 1 when a wid is not connected.",
        )
        signal.add_argument("wids", nargs="*", metavar="WID", help="worker process ids")
        signal.add_argument("--all", action="store_true", help="every connected worker")
        signal.set_defaults(handler=run_signal, state=name)


def show_workers(client: Client, args: argparse.Namespace) -> int:
    workers = _listed(client)
    if args.json:
        emit_json(workers)
        return OK
    listed = workers["listed"]
    table(
        ("WID", "HOST", "PID", "STATE", "JOBS", "LAST BEAT"),
        [
            (w["wid"], w["hostname"], w["pid"], w["state"],
             f"{len(w['jobs'])}{'+' if w.get('more') else ''}", stamp(w["beat_at"]))
            for w in listed
        ],
        "no workers connected",
    )  # fmt: skip
    held = [(w["wid"], job) for w in listed for job in w["jobs"]]
    if held:
        print()
        table(
            ("WID", "JID", "QUEUE", "JOBTYPE", "SINCE", "RESERVED UNTIL"),
            [
                (wid, job["jid"], job["queue"], job["jobtype"], stamp(job["since"]),
                 stamp(job["reserved_until"]))
                for wid, job in held
            ],
            "",
        )  # fmt: skip
    if workers["total"] > len(listed):
        print(f"({workers['total'] - len(listed)} more workers not listed)")
    return OK


def _listed(client: Client) -> dict[str, Any]:
    workers: dict[str, Any] = client.info().get("hopper", {}).get("workers", {})
    return workers or {"total": 0, "listed": []}


def run_signal(client: Client, args: argparse.Namespace) -> int:
    if bool(args.wids) == args.all:
        raise UsageError("give worker ids or --all")
    wids, unlisted = args.wids, 0
    if args.all:
        everyone = _listed(client)
        wids = [w["wid"] for w in everyone["listed"]]
        unlisted = everyone["total"] - len(wids)
    done, missing = {}, []
    for wid in wids:
        try:
            done[wid] = client.signal_worker(wid, args.state)
        except ServerError as exc:
            if not exc.message.startswith("unknown worker"):
                raise
            missing.append(wid)
    if args.json:
        emit_json({"states": done, "missing": missing})
    else:
        for wid, state in done.items():
            print(f"{wid}: {state}")
    for wid in missing:
        fail(NOT_FOUND, f"no worker {wid}")
    if unlisted > 0:  # INFO lists the workers that beat last, up to its bound
        fail(NOT_FOUND, f"{unlisted} more workers not told (INFO lists {len(wids)}): name them")
    return NOT_FOUND if missing or unlisted > 0 or not done else OK
