"""The argparse types the command lines share (hopper-worker, hopper-http-worker, the admin
commands): whole numbers and seconds with their bounds, and the log levels."""

import argparse
import math
from collections.abc import Callable

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")  # logging's


def positive(text: str) -> int:
    """A whole number of at least 1."""
    return _whole(text, 1)


def not_negative(text: str) -> int:
    """A whole number of at least 0."""
    return _whole(text, 0)


def seconds(text: str) -> float:
    """A finite number of seconds, not negative."""
    return _seconds(text, "", lambda value: value >= 0)


def seconds_above_zero(text: str) -> float:
    """A finite number of seconds above 0."""
    return _seconds(text, " above 0", lambda value: value > 0)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"not a whole number of at least {least}: {text!r}")
    return value


def _seconds(text: str, bound: str, within: Callable[[float], bool]) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (within(value) and value < math.inf):
        raise argparse.ArgumentTypeError(f"not a number of seconds{bound}: {text!r}")
    return value
