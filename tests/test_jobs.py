"""Job schema and validation: the reference's rules and error texts."""

import msgspec
import pytest

from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import (
    Job,
    check_queue_name,
    decode_pushed,
    decode_pushed_many,
    encode,
    format_time,
    job_decoder,
    parse_time,
    validate_new,
)

NOW = 1_764_000_000.25


def decode(text: str) -> Job:
    return job_decoder.decode(text)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"jobtype":"a","args":[]}', "jobs must have a reasonable jid parameter"),
        ('{"jid":"1234567","jobtype":"a","args":[]}', "jobs must have a reasonable jid parameter"),
        ('{"jid":"12345678","args":[]}', "jobs must have a jobtype parameter"),
        ('{"jid":"12345678","jobtype":"a"}', "jobs must have an args parameter"),
        ('{"jid":"12345678","jobtype":"a","args":null}', "jobs must have an args parameter"),
        (
            '{"jid":"12345678","jobtype":"a","args":[],"reserve_for":86401}',
            "jobs cannot be reserved for more than one day",
        ),
    ],
)
def test_validation_errors(payload: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        validate_new(decode(payload), NOW)
    assert caught.value.message == message


@pytest.mark.parametrize(
    "payload",
    ['{"jid":5,"jobtype":"a","args":[]}', '{"jid":"12345678","args":{}}', '{"retry":"x"}', "[", ""],
)
def test_wrong_types_are_decode_errors(payload: str) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode(payload)


def test_defaults_filled_and_unknown_fields_dropped() -> None:
    job = validate_new(decode('{"jid":"12345678","jobtype":"a","args":[],"colour":5}'), NOW)
    assert job.queue == "default"
    assert job.retry == 25
    assert job.created_at == "2025-11-24T16:00:00.25Z"
    assert b"colour" not in encode(job)


def test_explicit_retry_zero_and_negative_are_kept() -> None:
    assert (
        validate_new(decode('{"jid":"12345678","jobtype":"a","args":[],"retry":0}'), NOW).retry == 0
    )
    assert (
        validate_new(decode('{"jid":"12345678","jobtype":"a","args":[],"retry":-1}'), NOW).retry
        == -1
    )


def test_custom_and_args_round_trip() -> None:
    text = (
        '{"jid":"12345678","jobtype":"a","args":[1,2.5,"é",{"n":[null,true]},'
        '123456789012345678901234567890],"custom":{"k":{"deep":[1]}}}'
    )
    job = validate_new(decode(text), NOW)
    again = decode(encode(job))
    assert again.args == [1, 2.5, "é", {"n": [None, True]}, 123456789012345678901234567890]
    assert again.custom == {"k": {"deep": [1]}}


def test_reserve_for_leads_the_payload() -> None:
    job = validate_new(decode('{"jid":"12345678","jobtype":"a","args":[],"reserve_for":600}'), NOW)
    assert encode(job).startswith(b'{"reserve_for":600,')
    plain = validate_new(decode('{"jid":"12345678","jobtype":"a","args":[]}'), NOW)
    assert not encode(plain).startswith(b'{"reserve_for"')


@pytest.mark.parametrize("name", ["default", "a.b-c_D9", "x"])
def test_good_queue_names(name: str) -> None:
    check_queue_name(name)


@pytest.mark.parametrize("name", ["", "a b", "a{b}", "é", "a/b", "a\n"])
def test_bad_queue_names(name: str) -> None:
    with pytest.raises(CommandError, match="queue names must match"):
        check_queue_name(name)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2025-11-24T16:00:00Z", 1_764_000_000.0),
        ("2025-11-24T16:00:00.25Z", 1_764_000_000.25),
        ("2025-11-24T17:00:00+01:00", 1_764_000_000.0),
        ("2025-11-24T15:30:00-00:30", 1_764_000_000.0),
        ("2025-11-24t16:00:00.123456789z", 1_764_000_000.123456789),
    ],
)
def test_parse_time(text: str, seconds: float) -> None:
    assert parse_time(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "2025-11-24",
        "2025-11-24 16:00:00Z",
        "2025-13-01T00:00:00Z",
        "tomorrow",
        "2025-11-24T16:00:00",
    ],
)
def test_bad_times(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_format_time_trims_like_go() -> None:
    assert format_time(1_764_000_000.0) == "2025-11-24T16:00:00Z"
    assert format_time(1_764_000_000.5) == "2025-11-24T16:00:00.5Z"
    assert format_time(1_764_000_000.123456) == "2025-11-24T16:00:00.123456Z"
    assert parse_time(format_time(NOW)) == NOW


def test_top_level_nulls_mean_not_given() -> None:
    text = (
        b'{"jid":"12345678","jobtype":"a","args":[null],"queue":null,"retry":null,'
        b'"reserve_for":null,"at":null,"custom":null,"backtrace":null}'
    )
    job = validate_new(decode_pushed(text), NOW)
    assert (job.queue, job.retry, job.reserve_for, job.at, job.args) == (
        "default",
        25,
        0,
        "",
        [None],
    )
    with pytest.raises(CommandError, match="args parameter"):
        validate_new(decode_pushed(b'{"jid":"12345678","jobtype":"a","args":null}'), NOW)
    assert [j.jid for j in decode_pushed_many(b'[{"jid":"12345678","at":null}]')] == ["12345678"]


@pytest.mark.parametrize("text", [b'{"jid":5}', b'{"args":{}}', b"[1]", b"{", b'"x"'])
def test_decode_pushed_still_refuses_wrong_types(text: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_pushed(text)


def test_too_deep_json_is_a_decode_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_pushed(b'{"jid":"12345678","jobtype":"a","args":' + deep + b"}")
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_pushed_many(b'[{"jid":"12345678","jobtype":"a","args":' + deep + b"}]")
