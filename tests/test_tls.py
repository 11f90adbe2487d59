"""TLS on the protocol port, against a real broker process and a locally made certificate."""

import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaos.conn import Conn, Lost
from hopper_client import Client
from tests.conftest import BrokerProcess

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

PASSWORD = "tls-and-a-password"


@pytest.fixture
def tls_broker(
    broker_process: Callable[..., BrokerProcess], certificate: tuple[Path, Path]
) -> BrokerProcess:
    cert, key = certificate
    return broker_process(
        "--tls-cert", str(cert), "--tls-key", str(key), "--password", PASSWORD,
        "--handshake-timeout", "0.5",
    )  # fmt: skip


def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def closed_by_server(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the server closes the connection (reset or end of file) within `timeout`."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def test_jobs_flow_over_tls_with_a_password(
    tls_broker: BrokerProcess, certificate: tuple[Path, Path]
) -> None:
    context = client_context(certificate)
    conn = Conn(tls_broker.port, {"wid": "tls-worker"}, PASSWORD, tls=context)
    job = {"jid": "tls-00001", "jobtype": "secure", "args": ["over tls"]}
    assert conn.call("PUSH", job) == b"OK"
    assert b"over tls" in conn.call("FETCH", "default")
    assert conn.call("ACK", {"jid": "tls-00001"}) == b"OK"
    conn.close()
    # The bundled client, with its tcp+tls:// URL.
    with Client(f"tcp+tls://:{PASSWORD}@127.0.0.1:{tls_broker.port}", ssl_context=context) as c:
        jid = c.push("secure", ["bundled"])
        fetched = c.fetch("default")
        assert fetched is not None and fetched.jid == jid
        c.ack(jid)
        assert c.info()["faktory"]["total_processed"] == 2


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_plaintext_and_old_tls_are_turned_away(
    tls_broker: BrokerProcess, certificate: tuple[Path, Path]
) -> None:
    plain = socket.create_connection(("127.0.0.1", tls_broker.port))
    plain.sendall(b'HELLO {"v":2}\r\n')
    assert closed_by_server(plain)
    plain.close()
    old = client_context(certificate)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(Lost):
        Conn(tls_broker.port, {}, PASSWORD, tls=old)
    conn = Conn(tls_broker.port, {}, PASSWORD, tls=client_context(certificate))
    assert conn.call("INFO")  # the broker carries on
    conn.close()


def test_a_silent_client_is_dropped_at_the_handshake_deadline(tls_broker: BrokerProcess) -> None:
    """No ClientHello, or a TLS session with no HELLO: closed after handshake_timeout (0.5 s)."""
    silent = socket.create_connection(("127.0.0.1", tls_broker.port))
    started = time.monotonic()
    assert closed_by_server(silent)
    assert time.monotonic() - started < 3
    silent.close()
