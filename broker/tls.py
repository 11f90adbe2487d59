"""TLS for the protocol port, from a configured certificate and key."""

import ssl

from hopper_broker.config import Config
from hopper_broker.errors import StartError


def server_context(config: Config) -> ssl.SSLContext | None:
    """A TLS 1.2+ server context when a certificate is configured, else None; StartError when
    the files cannot be loaded."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except OSError as exc:  # ssl.SSLError included
        raise StartError(
            f"cannot load tls_cert {config.tls_cert} with tls_key {config.tls_key}: "
            f"{exc.strerror or exc}"
        ) from None
    return context
