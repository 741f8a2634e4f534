"""The tracing tests' fixtures: the ES double (tests/index's own fixture)."""

from tests.index.conftest import double

__all__ = ["double"]
