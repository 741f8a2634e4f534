"""How every Redis connection of the process, the CLI and the Python client is made.

One function, `connect(url, options)`, turns a URL and the TLS/pool settings into an `ArqRedis`
client with a bounded pool; nothing connects until the first command. URL forms:

- `redis://[user:password@]host:port/db`, `rediss://...` (TLS), `unix:///path/redis.sock?db=N`;
- `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]` (and
  `rediss+sentinel://` for TLS to the sentinels and the data nodes): the pool asks the sentinels
  for the primary and follows it when it moves (orchestrator/redis/sentinel.py).

The user and password of the URL authenticate to the data nodes; `sentinel_password` (with the
same user) to the sentinels, when they have `requirepass` of their own.

The pool is a blocking one with a maximum (`redis_max_connections`): past the budget a caller
waits for a free connection instead of opening one more, so N instances never hold more than
N x max connections on a managed Redis (see README, "Connection budget").

Errors become one line naming the URL (password masked) and the cause (`explain`): a refused or
timed-out connection, a failed TLS handshake, a refused password. A setting that cannot work (a CA
file that does not exist, or does not verify the server) is a ConfigError naming the setting.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.errors import ConfigError, StartupError
from orchestrator.logs import mask_url
from orchestrator.redis.closed import with_closed_write_as_connection_error
from orchestrator.redis.packing import with_hiredis_packing
from orchestrator.redis.sentinel import SentinelBlockingPool, parse_sentinel_url

if TYPE_CHECKING:
    from orchestrator.redis.settings import RedisSettings

logger = logging.getLogger(__name__)

SENTINEL_SCHEMES = {"redis+sentinel", "rediss+sentinel"}
SCHEMES = {"redis", "rediss", "unix", *SENTINEL_SCHEMES}
DEFAULT_MAX_CONNECTIONS = 32
# How long a caller waits for a free pooled connection once the budget is used up.
_POOL_WAIT_S = 20
# Between attempts while waiting for Redis at start-up (the last one repeats).
WAIT_BACKOFF_S = (1.0, 2.0, 2.0, 5.0, 5.0, 10.0)


# What an orchestrator user needs on a shared Redis (README, "Redis ACL"): its key prefixes and
# pub/sub channels only, and the command categories it uses without the dangerous ones (FLUSHALL,
# KEYS, CONFIG, INFO, DEBUG, SHUTDOWN, ...). tests/redis/test_redis_acl.py runs the whole job path
# (trigger, claim, run, outcome, cancel, lease, heartbeat, reaping, housekeeping) as such a user.
ACL_RULES = (
    "resetkeys ~orch:* ~arq:* resetchannels &orch:* "
    "-@all +@connection +@read +@write +@keyspace +@scripting +@pubsub +@transaction -@dangerous"
)


def acl_setuser(user: str, password: str) -> str:
    """The exact `ACL SETUSER` line for an orchestrator user."""
    return f"ACL SETUSER {user} reset on >{password} {ACL_RULES}"


class RedisUnavailable(StartupError):
    """Redis cannot be reached or refuses us (connection, TLS handshake, password): exit 1."""


@dataclass(frozen=True)
class RedisOptions:
    """The connection settings besides the URL (Settings' `redis_*` and `sentinel_password`).

    Args:
        ca_file: CA bundle that signs the server's certificate (TLS); default: the system's CAs.
        cert_file: client certificate, when the server wants one (`tls-auth-clients yes`).
        key_file: its private key.
        check_hostname: verify that the certificate names the host of the URL.
        sentinel_password: password of the sentinels themselves (Sentinel URLs only).
        max_connections: the pool's bound, per process (see the module docstring).
        socket_timeout_s: a reply slower than this is a failed command (a frozen Redis).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True
    sentinel_password: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    socket_timeout_s: float | None = None
    connect_timeout_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisOptions:
        return cls(
            ca_file=settings.redis_ca_file,
            cert_file=settings.redis_cert_file,
            key_file=settings.redis_key_file,
            check_hostname=settings.redis_check_hostname,
            sentinel_password=settings.sentinel_password.get_secret_value() if settings.sentinel_password else None,
            max_connections=settings.redis_max_connections,
        )


def _tls_kwargs(options: RedisOptions) -> dict[str, Any]:
    return {
        "ssl_ca_certs": str(options.ca_file) if options.ca_file else None,
        "ssl_certfile": str(options.cert_file) if options.cert_file else None,
        "ssl_keyfile": str(options.key_file) if options.key_file else None,
        "ssl_check_hostname": options.check_hostname,
        "ssl_cert_reqs": "required",
    }


def uses_tls(url: str) -> bool:
    return urlsplit(url).scheme in {"rediss", "rediss+sentinel"}


def connect(url: str, options: RedisOptions | None = None) -> ArqRedis:
    """A client for `url` with a bounded pool; nothing is connected until the first command.

    Raises:
        ConfigError: the URL's scheme or shape is wrong, or a TLS file setting names no file.
    """
    options = options or RedisOptions()
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        msg = f"redis_url: scheme {scheme!r} is not Redis; expected redis://, rediss://, unix:// or redis+sentinel://"
        raise ConfigError(msg)
    check_tls_files(options)
    common: dict[str, Any] = {
        "socket_connect_timeout": options.connect_timeout_s,
        "socket_timeout": options.socket_timeout_s,
        "max_connections": options.max_connections,
        "timeout": _POOL_WAIT_S,
    }
    tls = _tls_kwargs(options) if uses_tls(url) else {}
    if scheme in SENTINEL_SCHEMES:
        target = parse_sentinel_url(url)
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": options.connect_timeout_s}
        sentinel_kwargs["socket_timeout"] = options.connect_timeout_s
        if options.sentinel_password:
            sentinel_kwargs.update(password=options.sentinel_password, username=target.username)
        if target.tls:
            sentinel_kwargs.update(ssl=True, **tls)
        sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        redis = sentinel.master_for(
            target.service,
            redis_class=ArqRedis,
            connection_pool_class=SentinelBlockingPool,
            db=target.db,
            username=target.username,
            password=target.password,
            ssl=target.tls,
            **common,
            **tls,
        )
        pool = redis.connection_pool
        pool.connection_class = with_hiredis_packing(with_closed_write_as_connection_error(pool.connection_class))
        return cast(ArqRedis, redis)
    try:
        pool = BlockingConnectionPool.from_url(url, **common, **tls)
    except ValueError:
        # redis-py's parser cut the URL at an unencoded '#', '?' or '/' in the password, and its
        # message quotes what it took for the port: the start of the password. Never shown.
        msg = (
            f"redis_url: {mask_url(url)} cannot be parsed: a '#', '?', '/' or '@' in the password must be "
            "percent-encoded (%23, %3F, %2F, %40)"
        )
        raise ConfigError(msg) from None
    pool.connection_class = with_hiredis_packing(with_closed_write_as_connection_error(pool.connection_class))
    return cast(ArqRedis, ArqRedis.from_pool(pool))


def check_tls_files(options: RedisOptions) -> None:
    """A TLS file setting must name a readable file (checked before any connection is tried)."""
    for setting, path in (
        ("redis_ca_file", options.ca_file),
        ("redis_cert_file", options.cert_file),
        ("redis_key_file", options.key_file),
    ):
        if path is not None and not path.is_file():
            msg = f"{setting}: {path} does not exist or is not a file"
            raise ConfigError(msg)
    if (options.cert_file is None) != (options.key_file is None):
        raise ConfigError("redis_cert_file and redis_key_file: set both or neither")


def pool_stats(redis: Redis) -> dict[str, int]:
    """Open connections of the pool: in use now, idle, and the maximum."""
    pool = redis.connection_pool
    in_use = len(getattr(pool, "_in_use_connections", ()))
    idle = len([c for c in getattr(pool, "_available_connections", ()) if c.is_connected])
    return {"max": pool.max_connections, "in_use": in_use, "idle": idle}


# -- errors --


def _causes(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def cause_of(error: BaseException) -> str:
    """The short cause of a Redis failure: `connection refused`, `TLS: certificate verify failed ...`."""
    chain = _causes(error)
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS: certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError):
            return f"TLS: {e.reason or e}"
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, FileNotFoundError) and e.filename is None:
            return "no such socket"
    first = chain[0]
    text = str(first).strip().rstrip(".") or type(first).__name__
    if isinstance(first, MasterNotFoundError):
        return f"the sentinels know no primary: {text}"
    if isinstance(first, AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        return f"authentication failed: {text}"
    if isinstance(first, NoPermissionError):
        return f"permission denied: {text}"
    if isinstance(first, BusyLoadingError):
        return "Redis is loading its dataset"
    if isinstance(first, (RedisTimeoutError, TimeoutError)):
        return "timed out"
    if "Connection refused" in text:
        return "connection refused"
    return text


def is_setting_error(error: BaseException) -> bool:
    """A failure no retry can mend: the server's certificate does not verify with our CA."""
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(error))


def is_retryable(error: BaseException) -> bool:
    """A Redis that is down, restarting, loading or failing over (not a refused password)."""
    if is_setting_error(error):
        return False
    first = _causes(error)[0]
    if isinstance(first, (AuthenticationError, NoPermissionError)) or "WRONGPASS" in str(first):
        return False
    return isinstance(first, (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ReadOnlyError, OSError))


def is_connection_error(error: BaseException) -> bool:
    """What `explain` turns into one line: reaching Redis failed, as opposed to a bug in a command
    (or an OSError of something else, say a plugins folder, inside the same block)."""
    return isinstance(
        error,
        (
            RedisConnectionError,
            RedisTimeoutError,
            BusyLoadingError,
            AuthenticationError,
            NoPermissionError,
            ConnectionError,  # the builtin: refused, reset
            TimeoutError,
            ssl.SSLError,
        ),
    )


def explain(error: BaseException, url: str, options: RedisOptions | None = None) -> ConfigError | RedisUnavailable:
    """The one-line error for a failure to reach or use Redis at `url`.

    A certificate that does not verify is a setting that cannot work: a ConfigError naming
    `redis_ca_file` (exit 2); everything else is RedisUnavailable (exit 1).
    """
    cause = cause_of(error)
    where = mask_url(url)
    if is_setting_error(error):
        if "hostname" in cause.lower():
            msg = f"redis_check_hostname: the certificate of {where} does not name its host ({cause})"
            return ConfigError(msg)
        ca = options.ca_file if options and options.ca_file else "the system's CAs (set redis_ca_file)"
        msg = f"redis_ca_file: the certificate of {where} does not verify with {ca} ({cause})"
        return ConfigError(msg)
    return RedisUnavailable(f"redis: cannot connect to {where} ({cause})")


# -- start-up --


async def wait_until_up(
    redis: ArqRedis,
    url: str,
    options: RedisOptions | None = None,
    *,
    timeout_s: float | None = None,
    on_waiting: Callable[[str], Awaitable[None]] | None = None,
) -> None:
    """PING until Redis answers, with backoff and one log line per failed attempt.

    `on_waiting` is awaited once, at the first failure (the app starts its probes there).

    Raises:
        ConfigError: the server's certificate does not verify (no retry can mend it).
        RedisUnavailable: a refused password, or still no answer after `timeout_s` (None: wait forever).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    attempt = 0
    while True:
        try:
            await redis.ping()
            if attempt:
                logger.info("redis: %s answers after %d failed attempt(s)", mask_url(url), attempt)
            return
        except (RedisError, OSError) as e:
            if isinstance(e, ResponseError) and not isinstance(e, (NoPermissionError, BusyLoadingError)):
                raise
            error = explain(e, url, options)
            if not is_retryable(e):
                raise error from None
            delay = WAIT_BACKOFF_S[min(attempt, len(WAIT_BACKOFF_S) - 1)]
            attempt += 1
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    msg = f"{error} after waiting {timeout_s:g} s (redis_connect_timeout_s)"
                    raise RedisUnavailable(msg) from None
                delay = min(delay, left)
            logger.warning("%s; retrying in %g s", error, round(delay, 1))
            if attempt == 1 and on_waiting is not None:
                await on_waiting(str(error))
            await asyncio.sleep(delay)


# -- the connection budget --


def connection_budget(
    served_queues: dict[str, int], *, leader_eligible: bool, max_connections: int | None = None
) -> dict[str, int]:
    """How many pooled connections one instance needs at its busiest, by part (README, "Connection budget").

    With `max_connections` (the pool's bound), a budget above it is logged once: callers will wait.

    Workers: one claim at a time per queue, plus one outcome write per running job at most, plus
    the log flusher. Pub/sub: the workers' wake-up listener holds one for good. Heartbeat and lease:
    one each. Leader-only components (scheduler, change capture, housekeeping, status publishing):
    about one each while this instance leads. HTTP: one per concurrent request (a few).
    """
    workers = len(served_queues) + sum(served_queues.values()) + 1 if served_queues else 0
    budget = {
        "workers": workers,
        "pubsub": 1 if served_queues else 0,
        "heartbeat": 1,
        "lease": 1,
        "leader": 4 if leader_eligible else 0,
        "http": 4,
    }
    budget["total"] = sum(budget.values())
    if max_connections is not None and budget["total"] > max_connections:
        logger.warning(
            "redis: this instance may need %d connections at its busiest, above redis_max_connections=%d: "
            "callers will wait for a free one", budget["total"], max_connections,
        )  # fmt: skip
    return budget


# -- WAIT: an acknowledged enqueue that survives a failover --


class NotReplicated(RedisUnavailable):
    """A write was not confirmed by `redis_wait_replicas` replicas in time: a failover may lose it."""


async def confirm_replicated(redis: Redis, replicas: int, timeout_s: float) -> None:
    """Return once `replicas` replicas hold every write this process made so far.

    WAIT counts the replicas that acknowledged the *calling connection's* last write, and a pooled
    client may have written on another connection: so write a marker here first. It is later in
    the replication stream than every write already acknowledged to us, so a replica that has it
    has them too. On a primary that is no longer one (a failover is under way) no replica
    acknowledges: the caller is told, and retries under the same job id (enqueue dedupes by id).

    Raises:
        NotReplicated: fewer replicas acknowledged within `timeout_s`.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.set("orch:replication-marker", str(time.time()))
        pipe.execute_command("WAIT", replicas, int(timeout_s * 1000))
        _, acked = await pipe.execute()
    if int(acked) < replicas:
        msg = (
            f"redis: the write reached {acked} of the {replicas} replica(s) redis_wait_replicas asks for within "
            f"{timeout_s:g} s: a failover may lose it (retry with the same job id)"
        )
        raise NotReplicated(msg)
