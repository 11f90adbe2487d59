"""A minimal raw protocol client for tests: real sockets, replies parsed by hiredis."""

import hashlib
import json
from typing import Any

import hiredis
import trio


class WireError(Exception):
    """An error reply (`-CODE message`); str() is the text after the dash."""


class Wire:
    """One raw connection to a broker."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.reader = hiredis.Reader()

    @classmethod
    async def open(
        cls, port: int, *, hello: dict[str, Any] | None = None, password: str = ""
    ) -> "Wire":
        wire = cls(await trio.open_tcp_stream("127.0.0.1", port))
        greeting = await wire.reply()
        assert greeting.startswith(b"HI ")
        if hello is not None:
            payload = {"v": 2, **hello}
            challenge = json.loads(greeting[3:])
            if "s" in challenge:
                payload["pwdhash"] = pwdhash(password, challenge["s"], challenge["i"])
            assert await wire.call("HELLO", payload) == b"OK"
        return wire

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def reply(self) -> Any:
        while (reply := self.reader.gets()) is False:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("connection closed")
            self.reader.feed(bytes(data))
        if isinstance(reply, hiredis.ReplyError):
            raise WireError(str(reply))
        return reply

    async def call(self, verb: str, arg: Any = None) -> Any:
        line = verb.encode()
        if arg is not None:
            text = arg if isinstance(arg, (str, bytes)) else json.dumps(arg, separators=(",", ":"))
            line += b" " + (text.encode() if isinstance(text, str) else text)
        await self.send(line + b"\r\n")
        return await self.reply()

    async def closed(self) -> bool:
        """True when the server has closed the connection (reads to EOF)."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


def pwdhash(password: str, salt: str, iterations: int) -> str:
    digest = hashlib.sha256((password + salt).encode()).digest()
    for _ in range(iterations - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def job(jid: str, jobtype: str = "work", **fields: Any) -> dict[str, Any]:
    return {"jid": jid, "jobtype": jobtype, "args": fields.pop("args", []), **fields}


class SyncWire:
    """The same raw client, blocking, for tests that drive broker processes from threads."""

    def __init__(
        self,
        port: int,
        *,
        hello: dict[str, Any] | None = None,
        password: str = "",
        timeout: float = 10,
    ):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.reader = hiredis.Reader()
        greeting = self.reply()
        assert greeting.startswith(b"HI ")
        payload = {"v": 2, **(hello or {})}
        challenge = json.loads(greeting[3:])
        if "s" in challenge:
            payload["pwdhash"] = pwdhash(password, challenge["s"], challenge["i"])
        try:
            assert self.call("HELLO", payload) == b"OK"
        except BaseException:
            self.sock.close()
            raise

    def reply(self) -> Any:
        while (reply := self.reader.gets()) is False:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("connection closed")
            self.reader.feed(data)
        if isinstance(reply, hiredis.ReplyError):
            raise WireError(str(reply))
        return reply

    def call(self, verb: str, arg: Any = None) -> Any:
        line = verb if arg is None else f"{verb} {arg if isinstance(arg, str) else json.dumps(arg)}"
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()
