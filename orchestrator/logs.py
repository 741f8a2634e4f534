"""Logging set-up, done once from the CLI (rich on a terminal, JSON lines otherwise), and what may be printed:
`mask_url` is how every URL with a credential is shown in logs, errors, `config` and `/status`;
`mask_secrets` masks the URLs inside a longer text."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

_STD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers in containers expect."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STD_ATTRS})
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Install one handler on the root logger (stderr, so stdout stays clean for `--json`)."""
    use_rich = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    handler: logging.Handler
    if use_rich:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # arq logs a line per job start and end at INFO: noise at our volumes, and measurable CPU.
    logging.getLogger("arq").setLevel(max(logging.WARNING, root.level))


# Query parameters that carry a credential (redis-py honours `?password=`; index URLs carry tokens):
# `password`/`username` and any key naming a password, token or secret, in any case.
# The value runs to the next '&': a '#' in it is part of the secret as a user means it.
_SECRET_PARAM = re.compile(r"([?&](?:[^=&#]*(?:password|passwd|token|secret)[^=&#]*|username)=)([^&]*)", re.IGNORECASE)
# A URL inside free text (a requirement line, an error message): scheme://, then up to whitespace or a quote.
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>]+""")


def add_record_fields(fields: Callable[[], Mapping[str, str] | None]) -> Callable[[], None]:
    """Every line of the root logger's handlers gets `fields()`'s keys (JSON lines show them); returns the undo.

    Tracing uses it: with tracing on, a line logged inside a span carries `trace_id` and `span_id`.
    """

    def add(record: logging.LogRecord) -> bool:
        for key, value in (fields() or {}).items():
            setattr(record, key, value)
        return True

    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(add)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(add)

    return remove


def mask_url(url: str) -> str:
    """The URL with its credentials masked: the password of the user part (`mysql://u:secret@h/db`
    -> `mysql://u:***@h/db`) and the value of every credential query parameter (`?password=`,
    `?username=`, `?api_token=`, `?client_secret=`... -> `=***`). Anything else is returned as is."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest = _SECRET_PARAM.sub(r"\1***", rest)
    # Split by hand: urlsplit stops the user part at an unencoded '#', '/' or '?' in the password.
    # The user part ends at the last '@' before the query, or (a '?' in the password) the last one.
    before_query = rest.split("?", 1)[0]
    at = before_query.rfind("@") if "@" in before_query else rest.rfind("@")
    if at < 0:
        return f"{scheme}://{rest}"
    userinfo, host = rest[:at], rest[at + 1 :]
    if ":" not in userinfo:
        return f"{scheme}://{rest}"
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def mask_secrets(text: str) -> str:
    """`text` with every URL in it masked (mask_url): for requirement strings (`--extra-index-url
    https://user:token@host/simple`), error messages and anything else that may quote a URL."""
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
