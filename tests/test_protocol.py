"""The sans-IO framing, with no sockets: lines in, commands out, replies to bytes."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hopper_broker import protocol
from hopper_broker.errors import ProtocolError
from hopper_broker.protocol import Command, LineReader

STREAM = b'HELLO {"v":2}\r\nPUSH {"jid":"a b"}\nFETCH q1 q2\r\nEND\r\n'
EXPECTED = [
    Command("HELLO", b'{"v":2}'),
    Command("PUSH", b'{"jid":"a b"}'),
    Command("FETCH", b"q1 q2"),
    Command("END", b""),
]


def drain(reader: LineReader) -> list[Command]:
    commands = []
    while (command := reader.next_command()) is not None:
        commands.append(command)
    return commands


def test_whole_stream() -> None:
    reader = LineReader(1024)
    reader.feed(STREAM)
    assert drain(reader) == EXPECTED
    assert reader.pending == 0


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_split_at_every_offset(split: int) -> None:
    reader = LineReader(1024)
    reader.feed(STREAM[:split])
    got = drain(reader)
    reader.feed(STREAM[split:])
    assert got + drain(reader) == EXPECTED


def test_byte_by_byte() -> None:
    reader = LineReader(1024)
    got = []
    for i in range(len(STREAM)):
        reader.feed(STREAM[i : i + 1])
        got += drain(reader)
    assert got == EXPECTED


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"INFO", Command("INFO", b"")),
        (b"push {}", Command("push", b"{}")),  # verbs are case-sensitive: kept as sent
        (b"PUSH  {}", Command("PUSH", b" {}")),
        (b"", Command("", b"")),
        (b"\xff\xfe x", Command("\ufffd\ufffd", b"x")),
    ],
)
def test_parse_line(line: bytes, command: Command) -> None:
    assert protocol.parse_line(line) == command


def test_line_too_long_without_newline() -> None:
    reader = LineReader(10)
    reader.feed(b"PUSH 0123456789")
    with pytest.raises(ProtocolError) as caught:
        reader.next_command()
    assert caught.value.reply is not None and "line too long" in caught.value.reply


def test_line_too_long_with_newline() -> None:
    reader = LineReader(10)
    reader.feed(b"PUSH 0123456789\r\n")
    with pytest.raises(ProtocolError):
        reader.next_command()


def test_line_at_the_limit_is_fine() -> None:
    reader = LineReader(10)
    reader.feed(b"PUSH 01234\r\n")
    assert reader.next_command() == Command("PUSH", b"01234")


def test_replies() -> None:
    assert protocol.OK == b"+OK\r\n"
    assert protocol.NULL == b"$-1\r\n"
    assert protocol.bulk(b"{}") == b"$2\r\n{}\r\n"
    assert protocol.bulk("é".encode()) == b"$2\r\n\xc3\xa9\r\n"
    assert protocol.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert protocol.simple("HI x") == b"+HI x\r\n"


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=8),
)
def test_any_chunking_gives_the_same_commands(lines: list[bytes], chunks: list[int]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    whole = LineReader(1 << 20)
    whole.feed(data)
    expected = drain(whole)
    reader = LineReader(1 << 20)
    got: list[Command] = []
    position, i = 0, 0
    while position < len(data):
        size = chunks[i % len(chunks)]
        reader.feed(data[position : position + size])
        position += size
        i += 1
        got += drain(reader)
    assert got == expected
    assert len(got) == len(lines)


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    reader = LineReader(64)
    reader.feed(data)
    with contextlib.suppress(ProtocolError):
        drain(reader)
