"""Sans-IO framing of the Faktory protocol: bytes in, commands out; replies to bytes.

Requests are text lines (`VERB` or `VERB SP ARGS`) ended by LF, optionally preceded by CR.
Replies are a RESP2 subset: simple strings, errors, bulk strings and the null bulk string.
"""

from typing import NamedTuple

from hopper_broker.errors import ProtocolError


class Command(NamedTuple):
    """One request line: the verb (case-sensitive) and everything after the first space."""

    verb: str
    arg: bytes


class LineReader:
    """Splits a byte stream into commands; refuses lines longer than `max_line` bytes."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no LF

    def feed(self, data: bytes | bytearray) -> None:
        self._buffer += data

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole line."""
        return len(self._buffer)

    def next_command(self) -> Command | None:
        """The next whole command, or None until more data arrives."""
        buffer = self._buffer
        end = buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(buffer)
            if len(buffer) > self.max_line + 1:  # + 1: room for the CR of a line at the limit
                raise self._too_long()
            return None
        length = end - 1 if end and buffer[end - 1] == 13 else end
        if length > self.max_line:
            raise self._too_long()
        line = bytes(buffer[:length])
        del buffer[: end + 1]
        self._scanned = 0
        return parse_line(line)

    def commands(self) -> list[Command]:
        """Every whole command received so far (possibly none)."""
        found = []
        while (command := self.next_command()) is not None:
            found.append(command)
            if not self._buffer:  # the common case, one whole command: no second look
                break
        return found

    def _too_long(self) -> ProtocolError:
        return ProtocolError("line too long", f"ERR line too long (max {self.max_line} bytes)")


def parse_line(line: bytes) -> Command:
    """Split a line (without its terminator) into verb and argument."""
    verb, _, arg = line.partition(b" ")
    return Command(verb.decode("utf-8", "replace"), arg)


OK = b"+OK\r\n"
NULL = b"$-1\r\n"


def simple(text: str) -> bytes:
    return b"+" + _one_line(text) + b"\r\n"


def error(text: str) -> bytes:
    """`-CODE message`; `text` already starts with its code."""
    return b"-" + _one_line(text) + b"\r\n"


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _one_line(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode()
