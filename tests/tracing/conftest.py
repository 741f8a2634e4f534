"""The tracing tests' fixtures: the ES double and the scheduler rig, as tests/index and tests/schedules make them."""

from tests.index.conftest import double
from tests.schedules.conftest import rig

__all__ = ["double", "rig"]
