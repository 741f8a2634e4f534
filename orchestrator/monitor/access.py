"""Who may read and write what on the status endpoint, and which Host names it answers to.

- Writes need `Authorization: Bearer $ORCH_API_TOKEN` (403 when no token is configured).
- Job data (params, results, errors, logs, plugin details, schedules) needs the same token when one
  is configured; with none it is served only on a loopback bind, where only this host can ask.
  On another bind without a token the endpoint serves probes, counts and metrics only (one
  warning line at start says so).
- On a loopback bind the `Host` header must name this host (localhost names, loopback addresses,
  or `http_allowed_hosts`): a DNS-rebinding page whose name resolves to 127.0.0.1 is refused.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass

from aiohttp import web

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """A localhost name or a loopback address (`[::1]` with or without brackets)."""
    name = host.strip().lower().strip("[]").rstrip(".")
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a Host header, without the port: `[::1]:8080` -> `::1`, `a.b:80` -> `a.b`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class Access:
    """The endpoint's access rules, from the monitor settings.

    Args:
        token: ORCH_API_TOKEN, or None.
        bind: the http_host the server listens on.
        allowed_hosts: http_allowed_hosts (extra names a Host header may carry).
    """

    token: str | None
    bind: str
    allowed_hosts: tuple[str, ...] = ()

    @property
    def data_open(self) -> bool:
        """Job data served without a token: only to this host, on a loopback bind."""
        return is_loopback(self.bind)

    @property
    def counts_only(self) -> bool:
        """No token on a bind other hosts reach: job data is not served at all."""
        return self.token is None and not self.data_open

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request's Host header names this server (no Host header: not a browser, allowed)."""
        if header is None or not (self.data_open or self.allowed_hosts):
            return True
        name = host_name(header)
        return is_loopback(name) or name in self.allowed_hosts

    def bearer_ok(self, header: str | None) -> bool:
        """The Authorization header carries the token (constant-time compare; bytes that are not UTF-8 never match)."""
        if self.token is None or header is None:
            return False
        try:
            given = header.encode()
        except UnicodeEncodeError:  # aiohttp keeps undecodable header bytes as surrogates
            return False
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())


def _refuse(error: type[web.HTTPException], message: str) -> web.HTTPException:
    return error(text=json.dumps({"error": message}), content_type="application/json")


def require_write(access: Access, request: web.Request) -> None:
    """Raise 403 (no token configured) or 401 (missing or wrong token)."""
    if access.token is None:
        raise _refuse(web.HTTPForbidden, "writes are disabled: set ORCH_API_TOKEN to enable them")
    if not access.bearer_ok(request.headers.get("Authorization")):
        raise _refuse(web.HTTPUnauthorized, "missing or wrong bearer token")


def require_read(access: Access, request: web.Request) -> None:
    """Job data: the token when one is configured; with none, only on a loopback bind."""
    if access.token is not None:
        if not access.bearer_ok(request.headers.get("Authorization")):
            raise _refuse(web.HTTPUnauthorized, "missing or wrong bearer token (job data needs the API token)")
    elif not access.data_open:
        raise _refuse(
            web.HTTPForbidden,
            "job data is not served: set ORCH_API_TOKEN, or bind http_host to a loopback address",
        )
