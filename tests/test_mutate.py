"""MUTATE filters: Redis glob semantics (the moves themselves are in test_manager.py)."""

import pytest

from broker.jobs import MutateFilter
from broker.mutate import glob_regex, matches


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
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("a.b", "axb", False),
        ("[", "[", True),
    ],
)
def test_glob(pattern: str, text: str, expected: bool) -> None:
    assert (glob_regex(pattern).fullmatch(text) is not None) is expected


def test_matches_jobtype_and_glob() -> None:
    flt = MutateFilter(regexp="*ZZ*", jobtype="a")
    assert matches(flt, '{"x":"ZZ"}', "a")
    assert not matches(flt, '{"x":"ZZ"}', "b")
    assert not matches(flt, '{"x":"Z"}', "a")
