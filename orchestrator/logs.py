"""Logging set-up, done once from the CLI (rich on a terminal, JSON lines otherwise), and what may be printed:
`mask_url` is how every URL with a password is shown in logs, errors, `config` and `/status`."""

from __future__ import annotations

import json
import logging
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
    """`mysql://u:secret@h/db` -> `mysql://u:***@h/db`; URLs without a password are returned as-is."""
    # Split by hand: urlsplit stops the host part at an unencoded '#', '/' or '?' in the password.
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, host = rest.rpartition("@")
    if ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
