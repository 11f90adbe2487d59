"""`hopper`: the broker's commands (`run`, `check`) and, from client.admin, the operators'
commands that speak the protocol (`info`, `queues`, `jobs`, ...); nothing else.

Exit statuses: 0 ok; 1 a runtime failure (the broker could not start or stopped on an error,
`check` found problems) or, for the admin commands, nothing found; 2 a usage or settings error;
3 (admin commands) the broker cannot be reached or refused the password. Every error is one
line on stderr.
"""

import argparse
import difflib
import logging
import os
import shutil
import signal
import sys
from typing import NoReturn

from hopper_broker import __version__
from hopper_broker.errors import StartError
from hopper_broker.options import LINK_FLAG, add_flags, load_config
from hopper_client import admin  # the CLI entry point is the one place broker meets client
from hopper_client.admin.cli import Subcommands

USAGE = 2  # exit status of a usage or settings error
CHECK_SETTINGS = ("redis_url", "data_dir", "redis_server")

__all__ = ["load_config", "main", "parser"]


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: `hopper run: <what> (see hopper run --help)`."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("the following arguments are required"):
            message += f" (a value starting with - goes after --: {self.prog} ... -- -value)"
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parser() -> Parser:
    top = Parser(prog="hopper", description="Hopper job broker and its operators' commands.")
    top.add_argument("--version", action="version", version=f"hopper {__version__}")
    commands: Subcommands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the broker",
        description="Run the broker. Each setting is also read from the environment variable "
        "HOPPER_<NAME> and from the TOML file given by --config; flags win over the "
        "environment, which wins over the file. An unknown key in the file or an unknown "
        "HOPPER_* variable is an error.",
    )
    add_flags(run)
    run.add_argument(LINK_FLAG, type=int, help=argparse.SUPPRESS)  # set by the supervisor
    check_command = commands.add_parser(
        "check",
        help="check the store's integrity",
        description="Walk the whole store (in batches, safe while brokers run) and report every "
        "broken invariant: a job in no place or in two, an entry without its job, a jid index "
        "entry missing or pointing nowhere, a queue with work no loop would visit. Exit status "
        "0 when sound, 1 when problems remain.",
    )
    check_command.add_argument(
        "--repair", action="store_true", help="fix what can be fixed without losing a job"
    )
    check_command.add_argument("--json", action="store_true", help="print the report as JSON")
    add_flags(check_command, CHECK_SETTINGS)
    admin.add_commands(commands)
    return top


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line, or exit 2 with one line; an unknown flag gets the close one named."""
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra:
        command = f"hopper {args.command}"
        flags = _flags(top, args.command)
        close = difflib.get_close_matches(extra[0].split("=", 1)[0], flags, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        if not close and not extra[0].startswith("--"):
            hint = f"; a value starting with - goes after --: {command} ... -- {extra[0]}"
        top.exit(USAGE, f"{command}: unknown argument {extra[0]}{hint} (see {command} --help)\n")
    return args


def _flags(top: argparse.ArgumentParser, command: str) -> list[str]:
    for action in top._subparsers._group_actions if top._subparsers else ():
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub = action.choices[command]
            return [flag for a in sub._actions for flag in a.option_strings]
    return []


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.command == "run":  # a reload while starting must not end the process (its default)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() or the supervisor hears it
    if args.command in admin.COMMANDS:
        sys.exit(admin.run(args))
    try:
        config = load_config(args, dict(os.environ))
    except ValueError as exc:
        _fail(USAGE, str(exc))
    if not config.redis_url and shutil.which(config.redis_server) is None:
        _fail(1, f"redis_server: cannot find the program {config.redis_server!r}; install it, "
              "give its path (--redis-server) or use an external Redis (--redis-url)")  # fmt: skip
    several = args.command == "run" and (config.process_count > 1 or args.supervisor_fd is not None)
    logging.basicConfig(
        level=config.log_level.upper() if args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s"
        + ("[%(process)d]" if several else "")
        + ": %(message)s",
    )
    # The server's modules load here, for run and check only: the operators' commands above
    # start without them.
    from hopper_broker.launch import launch

    try:
        status = launch(args, argv, config)
    except* StartError as failed:
        _fail(1, str(_first(failed)))
    sys.exit(status)


def _fail(status: int, message: str) -> NoReturn:
    print(f"hopper: {message}", file=sys.stderr)
    sys.exit(status)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first exception in a (nested) exception group."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


if __name__ == "__main__":
    main()
