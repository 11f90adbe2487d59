"""One blocking Faktory protocol connection for the reliability runs, its handshake done, and
the ways it fails (Lost: refused, reset or closed; Hang: a reply that never came)."""

import json
import socket
import ssl
from typing import Any

import hiredis

from tests.wire import WireError, pwdhash

CALL_TIMEOUT = 10.0  # seconds; a reply slower than this is a hang


class Lost(Exception):
    """The connection failed: refused, reset or closed."""


class Hang(Lost):
    """A reply took longer than CALL_TIMEOUT."""


class Conn:
    """One blocking protocol connection (over TLS with a client context), handshake done."""

    def __init__(
        self,
        port: int,
        hello: dict[str, Any],
        password: str = "",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT)
            if tls is not None:
                self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")
        except OSError as exc:  # ssl.SSLError included
            raise Lost(str(exc)) from exc
        self.reader = hiredis.Reader()
        try:
            challenge = json.loads(self.reply()[3:])
            payload = {"v": 2, **hello}
            if "s" in challenge:
                payload["pwdhash"] = pwdhash(password, challenge["s"], challenge["i"])
            self.call("HELLO", payload)
        except BaseException:
            self.sock.close()
            raise

    def reply(self) -> Any:
        try:
            while (reply := self.reader.gets()) is False:
                data = self.sock.recv(65536)
                if not data:
                    raise Lost("connection closed")
                self.reader.feed(data)
        except TimeoutError as exc:
            raise Hang(f"no reply in {CALL_TIMEOUT}s") from exc
        except OSError as exc:
            raise Lost(str(exc)) from exc
        if isinstance(reply, hiredis.ReplyError):
            raise WireError(str(reply))
        return reply

    def call(self, verb: str, arg: Any = None) -> Any:
        line = verb.encode()
        if arg is not None:
            text = arg if isinstance(arg, str) else json.dumps(arg, separators=(",", ":"))
            line += b" " + text.encode()
        try:
            self.sock.sendall(line + b"\r\n")
        except OSError as exc:
            raise Lost(str(exc)) from exc
        return self.reply()

    def close(self) -> None:
        self.sock.close()
