"""`hopper info|queues|workers|jobs|job|retry|kill|delete|pause|resume|drain`: the operators'
commands, over the protocol with the bundled Client (see docs/operations.md; exit statuses in
cli.py)."""

from client.admin import actions, jobs, overview, queues
from client.admin.cli import Subcommands, common_options, run

MODULES = (overview, queues, jobs, actions)
COMMANDS = frozenset(name for module in MODULES for name in module.NAMES)

__all__ = ["COMMANDS", "add_commands", "run"]


def add_commands(commands: Subcommands) -> None:
    """Add every admin command to `hopper`'s subcommands."""
    common = common_options()
    for module in MODULES:
        module.register(commands, common)
