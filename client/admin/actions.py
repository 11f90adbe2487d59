"""`hopper retry|kill|delete`: act on jobs of the retries, scheduled or dead set, by jid or
all those matching a filter, and print how many were acted on. Each is a MUTATE by jids, which
moves a job only while it is still in the set."""

import argparse
from collections import defaultdict

from hopper_client.admin.cli import NOT_FOUND, OK, Subcommands, UsageError, fail
from hopper_client.admin.jobs import add_filters, walk
from hopper_client.admin.output import emit_json
from hopper_client.client import Client
from hopper_client.commands import MutateCommand, MutateTarget

NAMES = ("retry", "kill", "delete")
SETS: dict[str, MutateTarget] = {"retrying": "retries", "scheduled": "scheduled", "dead": "dead"}
ACTIONS: dict[str, tuple[MutateCommand, str, str]] = {  # name -> (MUTATE cmd, done, help)
    "retry": ("requeue", "retried", "run jobs now: back onto their queue"),
    "kill": ("kill", "killed", "move jobs to the dead set"),
    "delete": ("discard", "deleted", "delete jobs for good"),
}


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    for name, (cmd, _, text) in ACTIONS.items():
        action = commands.add_parser(
            name,
            parents=[common],
            help=f"{text} (by jid, or all matching)",
            description=f"{text[0].upper()}{text[1:]}: the jobs named by jid (found in "
            "whichever set holds them), or with --in SET every job of the set that matches "
            "--queue/--jobtype/--error (--all: every job of the set). Prints how many. Exit "
            "status 1 when a jid is in none of the sets, or nothing matched.",
        )
        action.add_argument("jids", nargs="*", metavar="JID", help="jobs to act on")
        action.add_argument("--in", dest="target", choices=_sources(cmd), metavar="SET",
                            help=f"the set to act on: {', '.join(_sources(cmd))}")  # fmt: skip
        add_filters(action)
        action.add_argument("--all", action="store_true", help="every job of the set --in")
        action.set_defaults(handler=run_action, action=name)


def run_action(client: Client, args: argparse.Namespace) -> int:
    cmd, done, _ = ACTIONS[args.action]
    filtered = bool(args.queue or args.jobtype or args.error)
    if args.jids and (filtered or args.all):
        raise UsageError("give jids, or a filter (--queue, --jobtype, --error) or --all")
    if args.jids:
        count, missing = _by_jid(client, args, cmd)
    elif args.target and (filtered or args.all):
        count, missing = _matching(client, args, cmd), []
    else:
        raise UsageError(
            "give jids, or --in SET with --all or a filter (--queue, --jobtype, --error)"
        )
    if args.json:
        emit_json({"action": args.action, "count": count, "missing": missing})
    else:
        print(f"{done} {count} job{'' if count == 1 else 's'}")
    *others, last = _sources(cmd)
    where = args.target or f"{', '.join(others)} or {last}"
    for jid in missing:
        fail(NOT_FOUND, f"no job {jid} in {where}")
    return NOT_FOUND if missing or not count else OK


def _by_jid(client: Client, args: argparse.Namespace, cmd: MutateCommand) -> tuple[int, list[str]]:
    """MUTATE the named jobs in the set each is in (or --in's); (count, jids not found)."""
    found: dict[MutateTarget, list[str]] = defaultdict(list)
    missing = []
    for jid in dict.fromkeys(args.jids):
        target = SETS.get(client.state(jid).state)
        if target not in _sources(cmd) or (args.target and target != args.target):
            missing.append(jid)
        else:
            found[target].append(jid)
    for target, jids in found.items():
        client.mutate(cmd, target, jids=jids)
    return sum(len(jids) for jids in found.values()), missing


def _sources(cmd: MutateCommand) -> tuple[MutateTarget, ...]:
    """The sets an action takes jobs from (kill: not the dead set itself)."""
    return tuple(target for target in SETS.values() if cmd != "kill" or target != "dead")


def _matching(client: Client, args: argparse.Namespace, cmd: MutateCommand) -> int:
    """MUTATE every job of the set that matches, a page at a time; returns how many."""
    count = 0
    for jobs in walk(client, args):
        if jobs:
            client.mutate(cmd, args.target, jids=[entry.jid for entry in jobs])
            count += len(jobs)
    return count
