"""Shared fixtures of the TRACE tests (helpers live in trace_tree_cases.py)."""
import pytest

from trace_tree_cases import make_trees


@pytest.fixture(scope="session")
def trees():
    return make_trees()
