"""Fixtures of the production-Redis tests: certificates, a TLS Redis, and a producer that keeps
triggering through outages (every trigger that returned an id is an acknowledged job)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis.servers import RedisProc, make_certs
from tests.services import free_port


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Path]) -> Iterator[RedisProc]:
    """A redis-server with only a TLS port, that wants a client certificate signed by the test CA."""
    port = free_port()
    # fmt: off
    server = RedisProc(tmp_path_factory.mktemp("tls-redis"), [
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(certs["server_crt"]), "--tls-key-file", str(certs["server_key"]),
        "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "yes",
    ], port=port)
    # fmt: on
    server.ping_args = [
        "--tls",
        "--cacert",
        str(certs["ca"]),
        "--cert",
        str(certs["client_crt"]),
        "--key",
        str(certs["client_key"]),
    ]  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()
