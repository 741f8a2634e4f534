"""The ES-protocol double every index test talks to over HTTP (no Elasticsearch can run here)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.index.esdouble import EsDouble


@pytest.fixture
async def double() -> AsyncIterator[EsDouble]:
    d = EsDouble()
    await d.start()
    yield d
    await d.stop()
