"""The admin commands' common ground: their options, the client they share, and the exit
statuses scripts can rely on.

0: done; 1: nothing found or matched (an unknown jid or queue, an empty listing) or the broker
refused the command; 2: usage (a bad flag or value); 3: the broker cannot be reached, or it
refused the password. Errors are one line on stderr, `hopper: <what>`.
"""

import argparse
import ssl
import sys
from collections.abc import Callable
from typing import Any, TypeAlias

from hopper_client.arguments import seconds_above_zero
from hopper_client.client import Client
from hopper_client.errors import AuthenticationError, ConnectionLost, ServerError

OK, NOT_FOUND, USAGE, UNREACHABLE = 0, 1, 2, 3
TIMEOUT = 10.0  # seconds to wait for a reply (--timeout)
CONNECT_TIMEOUT = 5.0  # seconds to connect and log in, at most

Handler = Callable[[Client, argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[Any]"  # of any ArgumentParser class


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit status 2)."""


def common_options() -> argparse.ArgumentParser:
    """The options every admin command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help="broker URL, tcp://[:password@]host:port or tcp+tls://... "
        "(default: $HOPPER_URL, else $FAKTORY_URL, else tcp://localhost:7419)",
    )
    common.add_argument(
        "--timeout",
        type=seconds_above_zero,
        default=TIMEOUT,
        metavar="SECONDS",
        help=f"seconds to wait for the broker's reply (default: {TIMEOUT:g})",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def run(args: argparse.Namespace) -> int:
    """Run the parsed admin command; returns its exit status."""
    handler: Handler = args.handler
    try:
        client = Client(
            args.url,
            timeout=args.timeout,
            connect_timeout=min(args.timeout, CONNECT_TIMEOUT),
            retry_for=0,
        )
    except ValueError as exc:
        return fail(USAGE, str(exc))
    try:
        return handler(client, args)
    except UsageError as exc:
        return fail(USAGE, str(exc))
    except AuthenticationError as exc:
        return fail(UNREACHABLE, f"the broker at {_where(client)} refused: {exc.message}")
    except ConnectionLost as exc:
        return fail(UNREACHABLE, f"cannot reach the broker at {_where(client)}: {_reason(exc)}")
    except ssl.SSLError as exc:  # its certificate not trusted, or TLS spoken wrong
        return fail(UNREACHABLE, f"cannot reach the broker at {_where(client)}: {exc}")
    except ServerError as exc:
        return fail(NOT_FOUND, f"the broker refused: {exc.message}")
    finally:
        client.close()


def fail(status: int, message: str) -> int:
    print(f"hopper: {message}", file=sys.stderr)
    return status


def _where(client: Client) -> str:
    """The broker the client tried last."""
    endpoint = client.endpoint
    return f"{'tcp+tls' if endpoint.tls else 'tcp'}://{endpoint.host}:{endpoint.port}"


def _reason(exc: ConnectionLost) -> str:
    cause = exc.__cause__
    return str(cause) if isinstance(cause, OSError) and str(cause) else str(exc)
