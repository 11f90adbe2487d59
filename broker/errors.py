"""Coded errors: every error a client can see is a BrokerError rendered as `-CODE message`."""

# Texts clients may act on (the bundled client does); keep them stable.
SHUTTING_DOWN = "shutdown in progress"
JID_IN_USE = "jid {} is already in use"
JOB_NOT_FOUND = "Job not found {}"


class BrokerError(Exception):
    """An error with a protocol code; rendered on the wire as `-CODE message`."""

    code = "ERR"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def render(self) -> str:
        return f"{self.code} {self.message}"


class CommandError(BrokerError):
    """A command was understood but cannot be carried out (bad argument, unknown jid, ...)."""


class Halt(BrokerError):
    """Raised by middleware to stop the chain; the client gets `-CODE message`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class Discard(Exception):
    """Raised by fetch middleware to drop the fetched job and fetch the next one."""


class ProtocolError(Exception):
    """The byte stream broke the framing rules; the connection must be closed."""

    def __init__(self, message: str, reply: str | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class RedisUnavailable(BrokerError):
    """Redis could not be reached or answered with an error."""

    def __init__(self, message: str) -> None:
        super().__init__(f"redis unavailable: {message}")


class StartError(Exception):
    """The broker cannot start (its data directory is in use, Redis is out of reach, ...); the
    message is the one line `hopper run` prints before it exits."""
