"""Where the broker is: `tcp://[user:password@]host:port` URLs and the environment; several
brokers sharing one Redis as a comma-separated list (`tcp://a:7419,tcp://b:7419`)."""

import os
from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit

import msgspec

DEFAULT_URL = "tcp://localhost:7419"
DEFAULT_PORT = 7419
URL_VARIABLES = ("HOPPER_URL", "FAKTORY_URL")
SCHEMES = {"tcp": False, "tcp+tls": True}  # scheme -> TLS


class Endpoint(msgspec.Struct, frozen=True):
    """A broker address with its credentials; repr hides the password."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    password: str = ""
    username: str = ""

    def __repr__(self) -> str:
        scheme = "tcp+tls" if self.tls else "tcp"
        secret = ":***@" if self.password else ""
        return f"Endpoint({scheme}://{secret}{self.host}:{self.port})"


def env_url(env: Mapping[str, str] | None = None) -> str:
    """The URL the environment names: HOPPER_URL, FAKTORY_PROVIDER's variable, FAKTORY_URL."""
    env = os.environ if env is None else env
    provider = env.get("FAKTORY_PROVIDER", "")
    for name in (URL_VARIABLES[0], provider, URL_VARIABLES[1]):
        if name and env.get(name):
            return env[name]
    return DEFAULT_URL


def parse_url(url: str | None = None, password: str | None = None) -> Endpoint:
    """Parse `url` (the environment's when None); an explicit `password` wins over the URL's."""
    text = env_url() if url is None else url
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"unsupported broker URL {text!r}: use tcp:// or tcp+tls://")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"invalid port in broker URL {text!r}") from None
    return Endpoint(
        host=parts.hostname or "localhost",
        port=port,
        tls=SCHEMES[parts.scheme],
        password=unquote(parts.password or "") if password is None else password,
        username=unquote(parts.username or ""),
    )


def parse_urls(
    url: str | Sequence[str] | None = None, password: str | None = None
) -> tuple[Endpoint, ...]:
    """Every broker `url` names (a URL, a comma-separated list of them, or a sequence; the
    environment's when None), in order; `password` as in parse_url."""
    text = env_url() if url is None else url
    urls = text.split(",") if isinstance(text, str) else list(text)
    found = tuple(parse_url(u.strip(), password) for u in urls if u.strip())
    if not found:
        raise ValueError("no broker URL given")
    return found
