"""The broker's own errors: middleware's Halt and Discard, broken framing, Redis out of reach,
a push not yet on its replicas, and a start that cannot happen. The coded errors clients see
are in hopper_client.schema.errors."""

from hopper_client.schema.errors import BrokerError


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


class Unreplicated(BrokerError):
    """A job stored, but not on the Redis replicas push_replicas asks for within its timeout:
    the client is told so (`-ERR`: it may be lost if the master fails now); it stays stored."""

    def __init__(self, acked: int, wanted: int, timeout: float) -> None:
        super().__init__(
            f"stored, but copied to {acked} of {wanted} Redis replicas within {timeout:g} s: "
            "lost if the Redis master fails now"
        )


class StartError(Exception):
    """The broker cannot start (its data directory is in use, Redis is out of reach, ...); the
    message is the one line `hopper run` prints before it exits."""
