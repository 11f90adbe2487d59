"""Coded errors: every error a client can see is a BrokerError rendered as `-CODE message`."""

# Texts clients may act on (the bundled client does); keep them stable.
SHUTTING_DOWN = "shutdown in progress"
JID_IN_USE = "jid {} is already in use"
JOB_NOT_FOUND = "Job not found {}"
RESULT_TOO_LARGE = "result too large (max {} bytes)"  # an ACK's result: the job stays reserved
INVALID_RESULT = "invalid result: {}"


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
