"""A command's argument decoded: JSON into the wire types, with the reference's error wording,
and numbers of seconds given as words."""

import math
from typing import TypeVar

import msgspec

from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import decode_input

T = TypeVar("T")


def seconds_of(word: str, verb: str) -> float:
    """A number of seconds given as a command word."""
    try:
        seconds = float(word)
    except ValueError:
        raise CommandError(f"{verb}: not a number of seconds: {word}") from None
    if not math.isfinite(seconds):
        raise CommandError(f"{verb}: not a number of seconds: {word}")
    return seconds


def decode_as(decoder: msgspec.json.Decoder[T], arg: bytes, verb: str) -> T:
    """The argument decoded, or `<VERB>: <why>`."""
    try:
        return decode_input(decoder, arg)
    except msgspec.DecodeError as exc:
        raise CommandError(f"{verb}: {exc}") from None


def decode(decoder: msgspec.json.Decoder[T], arg: bytes, verb: str) -> T:
    """The argument decoded, or the reference's `invalid <VERB> <payload>` error."""
    try:
        return decode_input(decoder, arg)
    except msgspec.DecodeError:
        raise CommandError(f"invalid {verb} {arg.decode('utf-8', 'replace')}") from None
