"""The operators' `hopper` commands (info, queues, workers, quiet, terminate, pause, resume,
drain, jobs, job, retry, kill, delete), over the protocol with the bundled Client; see
docs/operations.md, and cli.py for the exit statuses."""

from hopper_client.admin import actions, jobs, overview, queues, workers
from hopper_client.admin.cli import Subcommands, common_options, run

MODULES = (overview, workers, queues, jobs, actions)
COMMANDS = frozenset(name for module in MODULES for name in module.NAMES)

__all__ = ["COMMANDS", "add_commands", "run"]


def add_commands(commands: Subcommands) -> None:
    """Add every admin command to `hopper`'s subcommands."""
    common = common_options()
    for module in MODULES:
        module.register(commands, common)
