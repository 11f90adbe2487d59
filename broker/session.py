"""Per-connection state and the HELLO handshake; pure, no I/O."""

import hmac
import secrets
from collections import OrderedDict

import msgspec

from hopper_broker.errors import ProtocolError
from hopper_broker.protocol import Command
from hopper_client.schema.auth import password_hash
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import Hello, decode_input, hello_decoder

MIN_ITERATIONS = 4000  # the reference draws the hash iterations from [4000, 8095]
ITERATION_SPREAD = 4096
MAX_HINTS = 10_000  # fetched jids a connection remembers the queue of


class Session:
    """One client connection: the handshake challenge, its worker id and what it fetched."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.salt = format(secrets.randbits(63), "x")
        self.iterations = MIN_ITERATIONS + secrets.randbelow(ITERATION_SPREAD)
        self.wid = ""
        self.hello: Hello | None = None
        self._hints: OrderedDict[str, str] = OrderedDict()

    def greeting(self) -> bytes:
        if not self.password:
            return b'+HI {"v":2}\r\n'
        return b'+HI {"v":2,"i":%d,"s":"%s"}\r\n' % (self.iterations, self.salt.encode())

    def handshake(self, command: Command) -> Hello:
        """Check the HELLO line; ProtocolError closes silently, CommandError is sent first."""
        if command.verb != "HELLO" or not command.arg.startswith(b"{"):
            raise ProtocolError("expected HELLO")
        try:
            hello = decode_input(hello_decoder, command.arg)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"invalid HELLO: {exc}") from None
        if self.password:
            iterations = self.iterations if hello.v >= 2 else 1
            expected = password_hash(self.password, self.salt, iterations)
            if not hmac.compare_digest(expected.encode(), hello.pwdhash.encode()):
                raise CommandError("Invalid password")
        self.hello = hello
        self.wid = hello.wid
        return hello

    def remember(self, jid: str, queue: str) -> None:
        """Note the queue of a job this connection fetched, to skip a lookup at ACK/FAIL."""
        self._hints[jid] = queue
        if len(self._hints) > MAX_HINTS:
            self._hints.popitem(last=False)

    def recall(self, jid: str) -> str | None:
        """Forget and return the queue of a job this connection fetched, if known."""
        return self._hints.pop(jid, None)
