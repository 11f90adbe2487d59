"""MUTATE filters (the moves themselves are in test_manager.py; globs in test_glob.py)."""

from hopper_broker.mutate import matches
from hopper_client.schema.jobs import MutateFilter


def test_matches_jobtype_and_glob() -> None:
    flt = MutateFilter(regexp="*ZZ*", jobtype="a")
    assert matches(flt, '{"x":"ZZ"}', "a")
    assert not matches(flt, '{"x":"ZZ"}', "b")
    assert not matches(flt, '{"x":"Z"}', "a")
    assert matches(MutateFilter(), "{}", "anything")
