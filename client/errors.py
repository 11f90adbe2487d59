"""What the client raises: server replies (`-CODE message`) and lost connections."""


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
        """Split the text after `-` into its code and message."""
        code, _, message = text.partition(" ")
        return cls(code, message)


class AuthenticationError(ServerError):
    """The server refused the password given in HELLO."""


class ConnectionLost(ClientError, ConnectionError):
    """The connection broke, timed out or could not be opened; the command's outcome is unknown."""
