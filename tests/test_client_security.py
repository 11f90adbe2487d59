"""Passwords (the iterated-hash handshake) and TLS, for the sync and async clients."""

import asyncio
import ssl
from pathlib import Path

import pytest
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient, AuthenticationError, Client, Worker
from tests.conftest import StartBroker, test_config

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


@pytest.fixture
async def guarded(start_broker: StartBroker) -> App:
    return await start_broker(password="s3cret pass/word")


async def test_password_from_url_or_argument(guarded: App) -> None:
    address = f"127.0.0.1:{guarded.port}"

    def work() -> None:
        with Client(f"tcp://:s3cret%20pass%2Fword@{address}") as client:
            client.push("work")
        with Client(f"tcp://{address}", password="s3cret pass/word") as client:
            assert client.fetch() is not None
        for wrong in (Client(f"tcp://:nope@{address}"), Client(f"tcp://{address}")):
            with pytest.raises(AuthenticationError):
                wrong.info()

    await trio.to_thread.run_sync(work)
    async with AsyncClient(f"tcp://user:s3cret%20pass%2Fword@{address}") as client:
        await client.push("work")
    with pytest.raises(AuthenticationError):
        await AsyncClient(f"tcp://:nope@{address}").info()


async def test_url_from_the_environment(guarded: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKTORY_URL", "tcp://nowhere.invalid:1")
    monkeypatch.setenv("HOPPER_URL", f"tcp://:s3cret%20pass%2Fword@127.0.0.1:{guarded.port}")
    async with AsyncClient() as client:
        assert "faktory" in await client.info()


@pytest.fixture
async def tls_broker(store_url: str, certificate: tuple[Path, Path], nursery: trio.Nursery) -> App:
    config = test_config(store_url, tls_cert=str(certificate[0]), tls_key=str(certificate[1]))
    app = App(config)
    await nursery.start(app.run)
    return app


async def test_tls_for_sync_async_and_worker(
    tls_broker: App, certificate: tuple[Path, Path], nursery: trio.Nursery
) -> None:
    url = f"tcp+tls://127.0.0.1:{tls_broker.port}"
    trusted = ssl.create_default_context(cafile=str(certificate[0]))

    def sync_push() -> str:
        with Client(url, ssl_context=trusted) as client:
            return client.push("tls", ["sync"])

    async def asyncio_push() -> str:
        async with AsyncClient(url, ssl_context=trusted) as client:
            return await client.push("tls", ["asyncio"])

    await trio.to_thread.run_sync(sync_push)
    await trio.to_thread.run_sync(asyncio.run, asyncio_push())
    async with AsyncClient(url, ssl_context=trusted) as client:
        await client.push("tls", ["trio"])
    seen: list[str] = []
    done = trio.Event()
    worker = Worker(url, heartbeat=0.05, ssl_context=trusted)

    @worker.job()
    def tls(name: str) -> None:
        seen.append(name)
        if len(seen) == 3:
            trio.from_thread.run_sync(done.set)

    await nursery.start(worker.arun)
    await done.wait()
    assert sorted(seen) == ["asyncio", "sync", "trio"]
    worker.terminate()


async def test_untrusted_certificate_is_refused_at_once(tls_broker: App) -> None:
    url = f"tcp+tls://127.0.0.1:{tls_broker.port}"
    with pytest.raises(ssl.SSLCertVerificationError):
        await AsyncClient(url, retry_for=30).info()
    with pytest.raises(ssl.SSLCertVerificationError):
        await trio.to_thread.run_sync(Client(url, retry_for=30).info)
