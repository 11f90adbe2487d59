"""Several brokers on one Redis, one client: a comma-separated list of URLs (or a list), a new
connection going to the first broker that answers; a broker that stops is left for the next,
and the jobs it had are served by the others (all state is in Redis)."""

import socket

import pytest
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient, Client, ConnectionLost
from hopper_client.url import parse_urls
from tests.conftest import StartBroker, eventually, free_port

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


def refused(port: int) -> bool:
    """Whether nothing listens on the port any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_a_list_of_urls_is_parsed_in_order() -> None:
    found = parse_urls("tcp://a:1, tcp+tls://:pw@b:2,")
    assert [(e.host, e.port, e.tls, e.password) for e in found] == [
        ("a", 1, False, ""),
        ("b", 2, True, "pw"),
    ]
    assert parse_urls(["tcp://c:3"], password="x")[0].password == "x"
    with pytest.raises(ValueError, match="no broker URL"):
        parse_urls(" , ")
    with pytest.raises(ValueError, match="unsupported broker URL"):
        parse_urls("tcp://a:1,http://b:2")


async def test_the_async_client_moves_to_a_broker_that_answers(
    start_broker: StartBroker, nursery: trio.Nursery
) -> None:
    first, second = await start_broker(), await start_broker()
    dead = free_port()  # nothing listens there
    urls = f"tcp://127.0.0.1:{dead},tcp://127.0.0.1:{first.port},tcp://127.0.0.1:{second.port}"
    async with AsyncClient(urls, retry_for=5.0) as client:
        jid = await client.push("Move", [1])
        assert client.endpoint.port == first.port
        first.stop()  # its connections close; the next goes to the second broker
        await eventually(lambda: refused(first.port))
        found = await client.fetch("default")
        assert found is not None and found.jid == jid
        assert client.endpoint.port == second.port
        await client.ack(jid)
        assert (await client.state(jid)).state == "done"


async def test_the_sync_client_fails_over_and_says_when_none_answers(broker: App) -> None:
    dead = free_port()

    def use() -> tuple[int, str]:
        urls = [f"tcp://127.0.0.1:{dead}", f"tcp://127.0.0.1:{broker.port}"]
        with Client(urls) as client:
            jid = client.push("Move", [2])
            nobody = Client(f"tcp://127.0.0.1:{dead}", retry_for=0.2)
            with nobody, pytest.raises(ConnectionLost, match="cannot connect"):
                nobody.push("Move", [3])
            return client.endpoint.port, client.state(jid).state

    assert await trio.to_thread.run_sync(use) == (broker.port, "queued")
