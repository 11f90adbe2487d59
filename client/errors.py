"""What the client raises: server replies (`-CODE message`), lost connections, jobs that
failed or did not finish in time."""

from hopper_client.schema.jobs import JobState


class ClientError(Exception):
    """Base class of every error raised by `client`."""


class ServerError(ClientError):
    """The server answered `-CODE message`; the connection stays usable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_text(cls, text: str) -> "ServerError":
        """Split the text after `-` into its code and message (a known code gets its own
        kind of error)."""
        code, _, message = text.partition(" ")
        return CODED.get(code, cls)(code, message)


class QueueFull(ServerError):
    """The queue is at its max_size (`-FULL`); push again later, or push with `wait=`."""


class Draining(ServerError):
    """The queue or the whole broker drains (`-DRAINING`): pushes are refused for now."""


class NotUnique(ServerError):
    """A unique job whose identity is locked (`-NOTUNIQUE`, as Faktory Enterprise says)."""


CODED: dict[str, type[ServerError]] = {
    "FULL": QueueFull,
    "DRAINING": Draining,
    "NOTUNIQUE": NotUnique,
}


class AuthenticationError(ServerError):
    """The server refused the password given in HELLO."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection broke, timed out or could not be opened; the command's outcome is unknown."""


class UnknownJob(ClientError):
    """The broker holds no job of that jid (never pushed, or forgotten after finished_ttl)."""


class JobFailed(ClientError):
    """The job is over without a result: discarded (retry 0) or dead. `state` tells more."""

    def __init__(self, state: JobState) -> None:
        failure = state.failure
        reason = f": {failure.errtype}: {failure.message}" if failure else ""
        super().__init__(f"job {state.jid} is {state.state}{reason}")
        self.state = state


class BatchNotOpen(ClientError):
    """A batch used before it was opened (`with`, or `open()`) or after it was committed
    (open it again to add jobs), as Faktory's Go client refuses it."""


class ResultTimeout(ClientError, TimeoutError):
    """The job was not over within the time given."""
