"""The broker's connection to Redis over TLS (rediss://), against a real redis-server that
speaks only TLS on its port."""

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hopper_broker.errors import StartError
from hopper_broker.store.address import Address, ReplyError
from tests.conftest import StartBroker, free_port
from tests.wire import Wire, job


@pytest.fixture(scope="module")
def tls_redis(certificate: tuple[Path, Path]) -> Iterator[int]:
    """A redis-server with its TLS port only (no plaintext port); yields the port."""
    yield from tls_server(certificate, "--tls-auth-clients", "no")


@pytest.fixture(scope="module")
def strict_tls_redis(certificate: tuple[Path, Path]) -> Iterator[int]:
    """A TLS-only redis-server that wants a client certificate and a password; its port."""
    yield from tls_server(certificate, "--tls-auth-clients", "yes", "--requirepass", "secret")


def tls_server(certificate: tuple[Path, Path], *flags: str) -> Iterator[int]:
    cert, key = certificate
    port = free_port()
    directory = tempfile.mkdtemp(prefix="hopper-tls-redis-")
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), *flags,
         "--save", "", "--appendonly", "no", "--dir", directory, "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        ping = ["redis-cli", "--tls", "--cacert", str(cert), "--cert", str(cert), "--key",
                str(key), "-p", str(port), "PING"]  # fmt: skip
        for _ in range(200):
            done = subprocess.run(ping, capture_output=True, text=True, timeout=10)
            if "PONG" in done.stdout or "NOAUTH" in done.stdout:
                break
            time.sleep(0.02)
        else:
            pytest.skip(f"this redis-server does not speak TLS: {done.stderr.strip()}")
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


async def ping(url: str) -> object:
    return await Address(url).ask("PING", timeout=5)


async def test_rediss_verifies_the_server_with_the_given_ca(
    tls_redis: int, certificate: tuple[Path, Path]
) -> None:
    cert, _ = certificate
    assert await ping(f"rediss://127.0.0.1:{tls_redis}/0?ssl_ca_certs={cert}") == b"PONG"
    # the same self-signed server without its CA: refused, unless verification is off
    with pytest.raises(OSError, match=r"(?i)certificate verify failed"):
        await ping(f"rediss://127.0.0.1:{tls_redis}/0")
    assert await ping(f"rediss://127.0.0.1:{tls_redis}/0?ssl_cert_reqs=none") == b"PONG"


async def test_plaintext_to_a_tls_port_gets_no_reply(tls_redis: int) -> None:
    """What rediss:// used to do (a plaintext connection): Redis's TLS port never answers it."""
    with pytest.raises((OSError, ReplyError, trio.BrokenResourceError)):
        await Address(f"redis://127.0.0.1:{tls_redis}/0").ask("PING", timeout=1)


async def test_a_login_the_tls_server_breaks_off_is_an_oserror(
    strict_tls_redis: int, certificate: tuple[Path, Path]
) -> None:
    """TLS 1.3: the handshake ends before the server checks the client's certificate, so a
    server that wants one breaks the connection off during AUTH: an OSError, as for any
    broken connection (the Pipeline retries it), never trio's BrokenResourceError."""
    cert, _ = certificate
    url = f"rediss://:secret@127.0.0.1:{strict_tls_redis}/0?ssl_ca_certs={cert}"
    with pytest.raises(OSError, match=re.escape("TLS with rediss://:***@127.0.0.1")):
        await Address(url).open(timeout=5)
    no_login = f"rediss://127.0.0.1:{strict_tls_redis}/0?ssl_ca_certs={cert}"  # broken at PING
    with pytest.raises(OSError, match=r"TLS with rediss://127\.0\.0\.1"):
        await Address(no_login).ask("PING", timeout=5)


def test_a_missing_ca_file_is_one_start_error(tmp_path: Path) -> None:
    with pytest.raises(
        StartError, match=r"redis_url: cannot load its TLS files \(.*nowhere\.pem\): No such file"
    ):
        Address(f"rediss://127.0.0.1:1/0?ssl_ca_certs={tmp_path / 'nowhere.pem'}")


async def test_a_broker_serves_jobs_on_a_tls_redis(
    tls_redis: int, certificate: tuple[Path, Path], nursery: trio.Nursery
) -> None:
    cert, _ = certificate
    url = f"rediss://127.0.0.1:{tls_redis}/0?ssl_ca_certs={cert}"
    broker = await StartBroker(nursery, url)()
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("over-tls"))
    fetched = await w.call("FETCH", "default")
    assert fetched is not None and b"over-tls" in fetched
    assert await w.call("ACK", {"jid": "over-tls"}) == b"OK"
