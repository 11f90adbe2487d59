"""TLS contexts: the protocol port's (a configured certificate and key) and the one a
rediss:// Redis URL asks for."""

import ssl
from collections.abc import Mapping
from typing import Any

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


# What a rediss:// URL's query may say (redis-py's names): ssl_ca_certs=PEM file of the CAs to
# trust (default: the system's), ssl_cert_reqs=none to skip verification (a self-signed test
# server), ssl_certfile + ssl_keyfile for a client certificate.
NO_VERIFY = ("none", "cert_none", "optional")
TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def redis_context(options: Mapping[str, Any]) -> ssl.SSLContext:
    """The client context of a rediss:// URL's options (TLS 1.2+, the server verified unless
    ssl_cert_reqs=none); StartError when its files cannot be loaded."""
    try:
        context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if str(options.get("ssl_cert_reqs", "")).lower() in NO_VERIFY:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if options.get("ssl_certfile"):
            context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    except OSError as exc:  # ssl.SSLError included
        files = ", ".join(str(options[name]) for name in TLS_FILES if options.get(name))
        raise StartError(
            f"redis_url: cannot load its TLS files ({files}): {exc.strerror or exc}"
        ) from None
    return context
