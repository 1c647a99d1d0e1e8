"""Faults injected into real processes (see docs/reliability.md)."""

import pytest

# The end-state checks live in helper modules: let pytest explain their failed asserts.
pytest.register_assert_rewrite("tests.reliability.stack", "tests.reliability.outcomes")
