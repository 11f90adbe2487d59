"""One blocking socket to the broker, handshake done; used by one thread at a time."""

import contextlib
import socket
import ssl
from ssl import SSLCertVerificationError as CertificateError

from hopper_client.errors import ConnectionLost
from hopper_client.url import Endpoint
from hopper_client.wire import (
    CRLF,
    READ_SIZE,
    Identity,
    Reply,
    ReplyReader,
    check_welcome,
    hello_line,
)


class Connection:
    """A connected, identified socket: `request(line)` sends one command and reads its reply."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._replies = ReplyReader()

    @classmethod
    def open(
        cls,
        endpoint: Endpoint,
        identity: Identity,
        *,
        timeout: float,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ) -> "Connection":
        """Connect, say HELLO and wait for OK; ConnectionLost if the broker cannot be reached."""
        try:
            sock = socket.create_connection((endpoint.host, endpoint.port), connect_timeout)
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {endpoint!r}: {exc}") from exc
        conn = cls(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            if ssl_context is not None:
                conn._sock = ssl_context.wrap_socket(sock, server_hostname=endpoint.host)
            greeting = conn.read()
            check_welcome(conn.request(hello_line(greeting, endpoint, identity)))
        except BaseException as exc:
            conn.close()
            if isinstance(exc, OSError) and not isinstance(exc, ConnectionLost | CertificateError):
                raise ConnectionLost(f"handshake with {endpoint!r} failed: {exc}") from exc
            raise
        return conn

    def request(self, line: bytes) -> Reply:
        """Send one command line and return its reply."""
        self.send(line)
        return self.read()

    def send(self, data: bytes) -> None:
        """Send command lines; their replies are read with `read()`."""
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"cannot send to the broker: {exc}") from exc

    def read(self) -> Reply:
        """The next reply, waiting up to the socket's timeout for its bytes."""
        while (reply := self._replies.next_reply()) is False:
            try:
                received = self._sock.recv(READ_SIZE)
            except OSError as exc:
                raise ConnectionLost(f"no reply from the broker: {exc}") from exc
            if not received:
                raise ConnectionLost("the broker closed the connection")
            self._replies.feed(received)
        return reply

    def settimeout(self, seconds: float) -> None:
        """How long `read()` waits for a reply from now on."""
        self._sock.settimeout(seconds)

    def close(self, *, polite: bool = False) -> None:
        """Close the socket; `polite` says END first."""
        with contextlib.suppress(OSError):
            if polite:
                self._sock.sendall(b"END" + CRLF)
            self._sock.close()
