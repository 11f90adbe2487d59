"""`hopper pause|resume|drain`: stop and start handing out a queue's jobs, refuse pushes."""

import argparse

from hopper_client.admin.cli import NOT_FOUND, OK, Subcommands, fail
from hopper_client.admin.output import emit_json
from hopper_client.arguments import seconds_above_zero
from hopper_client.client import Client

NAMES = ("pause", "resume", "drain")


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    pause = commands.add_parser(
        "pause",
        parents=[common],
        help="stop handing out the jobs of queues",
        description="Pause queues: FETCH gives none of their jobs; pushes are still taken. "
        "`*` pauses every queue. Exit status 1 when a named queue does not exist.",
    )
    pause.add_argument("queues", nargs="+", metavar="QUEUE", help="queue names, or *")
    pause.add_argument(
        "--for",
        dest="seconds",
        type=seconds_above_zero,
        metavar="SECONDS",
        help="resume by themselves after this many seconds (default: until resumed)",
    )
    pause.set_defaults(handler=run_pause)
    resume = commands.add_parser(
        "resume",
        parents=[common],
        help="hand out the jobs of paused queues again",
        description="Resume paused queues (`*`: every queue). Exit status 1 when a named queue "
        "does not exist.",
    )
    resume.add_argument("queues", nargs="+", metavar="QUEUE", help="queue names, or *")
    resume.set_defaults(handler=run_resume)
    drain = commands.add_parser(
        "drain",
        parents=[common],
        help="refuse pushes to queues, or to the whole broker",
        description="Drain queues: pushes get -DRAINING while FETCH, ACK and FAIL go on, so "
        "a deploy can empty them. Without queue names the whole broker drains (DRAIN ON). "
        "--off takes pushes again.",
    )
    drain.add_argument("queues", nargs="*", metavar="QUEUE", help="queue names (none: all)")
    drain.add_argument("--off", action="store_true", help="stop draining: take pushes again")
    drain.set_defaults(handler=run_drain)


def run_pause(client: Client, args: argparse.Namespace) -> int:
    missing = _missing(client, args.queues)
    timed = [] if args.seconds is None else [f"for={args.seconds:g}"]
    client.pause(*args.queues, *timed)
    return _done(args, "paused", missing)


def run_resume(client: Client, args: argparse.Namespace) -> int:
    missing = _missing(client, args.queues)
    client.resume(*args.queues)
    return _done(args, "resumed", missing)


def run_drain(client: Client, args: argparse.Namespace) -> int:
    if not args.queues:
        client.drain(not args.off)
        return _done(args, "the broker drains" if not args.off else "the broker takes pushes", [])
    client.set_queue(*args.queues, draining=not args.off)
    return _done(args, "draining" if not args.off else "taking pushes", [])


def _missing(client: Client, names: list[str]) -> list[str]:
    """The named queues the broker does not list (`*` names them all)."""
    info = client.info()
    known = {*info["faktory"]["queues"], *info.get("hopper", {}).get("queues", {})}
    return [name for name in names if name != "*" and name not in known]


def _done(args: argparse.Namespace, what: str, missing: list[str]) -> int:
    found = [name for name in args.queues if name not in missing]
    if args.json:
        emit_json({"done": found, "missing": missing})
    elif found or not args.queues:
        print(f"{what}: {', '.join(found)}" if found else what)
    for name in missing:
        fail(NOT_FOUND, f"no queue {name}")
    return NOT_FOUND if missing else OK
