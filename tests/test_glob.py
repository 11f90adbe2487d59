"""Redis glob semantics, checked against Redis itself (KEYS uses the same matcher)."""

import time

import pytest
import redis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hopper_broker.glob import Glob


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("*", "anything", True),
        ('*"jobtype":"a"*', '{"jobtype":"a","x":1}', True),
        ('*"jobtype":"a"*', '{"jobtype":"ab"}', False),
        ("h?llo", "hello", True),
        ("h[ae]llo", "hallo", True),
        ("h[^e]llo", "hello", False),
        ("h[^e]llo", "hallo", True),
        ("[z-a]", "m", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("a.b", "axb", False),
        ("ab*", "a", False),
    ],
)
def test_table(pattern: str, text: str, expected: bool) -> None:
    assert Glob.of(pattern).match(text) is expected


def redis_matches(rdb: redis.Redis, pattern: str, text: str) -> bool:
    rdb.flushdb()  # each example starts from an empty database
    rdb.set(text, 1)
    return bool(rdb.keys(pattern))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.text(alphabet="ab*?[]^-\\z", max_size=10),
    st.text(alphabet="abz-[]^\\*", min_size=1, max_size=8),  # KEYS never lists the key ""
)
@example("[", "[")
@example("[^]x]", "qx]")
@example("[a-]", "]")
@example("a\\", "a\\")
@example("[\\]]", "]")
def test_same_as_redis(rdb: redis.Redis, pattern: str, text: str) -> None:
    assert Glob.of(pattern).match(text) is redis_matches(rdb, pattern, text)


def test_not_exponential() -> None:
    started = time.perf_counter()
    assert not Glob.of("*a*a*a*a*a*a*a*a*b").match("a" * 2000)
    assert not Glob.of("*a?a*a*a[a]*a*a*a*b").match("a" * 2000)
    assert time.perf_counter() - started < 1.0
