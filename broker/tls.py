"""TLS for the protocol port, from a configured certificate and key."""

import ssl

from broker.config import Config


def server_context(config: Config) -> ssl.SSLContext | None:
    """A TLS 1.2+ server context when a certificate is configured, else None."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context
