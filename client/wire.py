"""Sans-IO framing for clients: reply parsing (RESP2 via hiredis) and the HI/HELLO handshake.

Transports (the blocking socket in connection.py, the trio and asyncio streams in
transports.py) move bytes; everything they say to the broker and understand of it is here.
"""

import os
import socket
from typing import Literal

import hiredis
import msgspec

from hopper_client.errors import AuthenticationError, ConnectionLost, ServerError
from hopper_client.schema.auth import password_hash
from hopper_client.schema.errors import SHUTTING_DOWN
from hopper_client.schema.jobs import Hello, encode
from hopper_client.url import Endpoint

PROTOCOL_VERSION = 2
READ_SIZE = 64 * 1024
CRLF = b"\r\n"

Reply = bytes | None | ServerError
"""A simple or bulk string, the null bulk string, or an error reply (as a value)."""


class Identity(msgspec.Struct, frozen=True):
    """What a connection tells the broker about itself; a `wid` makes it a worker's."""

    wid: str = ""
    labels: tuple[str, ...] = ("python",)


class Greeting(msgspec.Struct):
    """The JSON of `+HI`: protocol version and, with a password, salt and iterations."""

    v: int = 0
    s: str = ""
    i: int = 1


greeting_decoder = msgspec.json.Decoder(Greeting)
HOSTNAME = socket.gethostname()


class ReplyReader:
    """Turns received bytes into replies; an error reply is returned, not raised."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()

    def feed(self, data: bytes) -> None:
        self._reader.feed(data)

    def next_reply(self) -> Reply | Literal[False]:
        """The next whole reply, or False until more bytes arrive; ConnectionLost for bytes
        that are not a reply (the address is some other service's)."""
        try:
            reply = self._reader.gets()
        except hiredis.ProtocolError as exc:
            raise ConnectionLost(f"not a Faktory server's reply: {exc}") from None
        if reply is False or reply is None or isinstance(reply, bytes):
            return reply
        if isinstance(reply, hiredis.ReplyError):
            error = ServerError.from_text(str(reply))
            if error.message == SHUTTING_DOWN:
                raise ConnectionLost("the broker is shutting down")
            return error
        raise ConnectionLost(f"unexpected reply from the broker: {reply!r}")


def hello_line(greeting: Reply, endpoint: Endpoint, identity: Identity) -> bytes:
    """The HELLO command answering the server's `HI` greeting."""
    if not isinstance(greeting, bytes) or not greeting.startswith(b"HI "):
        raise ConnectionLost(f"expected a HI greeting, got {greeting!r}")
    try:
        challenge = greeting_decoder.decode(greeting[3:])
    except msgspec.DecodeError as exc:
        raise ConnectionLost(f"invalid HI greeting: {exc}") from None
    pwdhash = ""
    if challenge.s:
        if not endpoint.password:
            raise AuthenticationError("ERR", "the broker requires a password")
        pwdhash = password_hash(endpoint.password, challenge.s, challenge.i)
    hello = Hello(
        v=PROTOCOL_VERSION,
        hostname=HOSTNAME,
        wid=identity.wid,
        pid=os.getpid(),
        labels=list(identity.labels),
        pwdhash=pwdhash,
        username=endpoint.username,
    )
    return b"HELLO " + encode(hello) + CRLF


def check_welcome(reply: Reply) -> None:
    """Raise unless the server accepted HELLO with `+OK`."""
    if isinstance(reply, ServerError):
        if "password" in reply.message.lower():
            raise AuthenticationError(reply.code, reply.message)
        raise reply
    if reply != b"OK":
        raise ConnectionLost(f"expected OK after HELLO, got {reply!r}")
