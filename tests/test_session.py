"""The handshake state machine and password hashing, with no sockets."""

import json

import pytest

from hopper_broker.errors import ProtocolError
from hopper_broker.protocol import Command
from hopper_broker.session import Session
from hopper_client.schema.auth import password_hash
from hopper_client.schema.errors import CommandError
from tests.wire import pwdhash


def test_reference_vector() -> None:
    expected = "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"
    assert password_hash("foobar", "55104dc76695721d", 1545) == expected


def test_greeting_without_password() -> None:
    assert Session("").greeting() == b'+HI {"v":2}\r\n'


def test_greeting_with_password_has_salt_and_iterations() -> None:
    session = Session("secret")
    challenge = json.loads(session.greeting()[4:])
    assert list(challenge) == ["v", "i", "s"]
    assert 4000 <= challenge["i"] <= 8095
    assert challenge["s"] == session.salt and len(session.salt) <= 16


def test_good_password() -> None:
    session = Session("secret")
    digest = pwdhash("secret", session.salt, session.iterations)
    hello = session.handshake(
        Command("HELLO", json.dumps({"v": 2, "pwdhash": digest, "wid": "w"}).encode())
    )
    assert hello.wid == "w" and session.wid == "w"


def test_version_1_uses_one_iteration() -> None:
    session = Session("secret")
    digest = pwdhash("secret", session.salt, 1)
    session.handshake(Command("HELLO", json.dumps({"v": 1, "pwdhash": digest}).encode()))


@pytest.mark.parametrize("pwd", ["", "nope", "x" * 64])
def test_bad_password(pwd: str) -> None:
    session = Session("secret")
    with pytest.raises(CommandError, match="Invalid password"):
        session.handshake(Command("HELLO", json.dumps({"v": 2, "pwdhash": pwd}).encode()))


@pytest.mark.parametrize(
    "command",
    [
        Command("PUSH", b"{}"),
        Command("HELLO", b"x"),
        Command("HELLO", b"{bad"),
        Command("hello", b"{}"),
        Command("HELLO", b'{"v":"two"}'),
    ],
)
def test_not_a_hello_closes(command: Command) -> None:
    with pytest.raises(ProtocolError):
        Session("").handshake(command)


def test_hints_are_bounded_and_forgotten_on_recall() -> None:
    session = Session("")
    for i in range(10_050):
        session.remember(f"jid{i}", "q")
    assert session.recall("jid0") is None
    assert session.recall("jid10049") == "q"
    assert session.recall("jid10049") is None
