"""What the launcher reads from a child: log lines from stdout/stderr, the result line, and the
RunResult made of them.

Reading works on raw bytes as they arrive, with hard caps, so undecodable output, a line of a
gigabyte or 10,000 lines a second cannot break or stall a run.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

logger = logging.getLogger(__name__)

STREAMS = {1: "stdout", 2: "stderr"}
STDERR_MARK = "[stderr] "
_SIGNAL_HINTS = {signal.SIGXCPU: " (cpu_seconds limit)", signal.SIGKILL: ""}


@dataclass
class RunResult:
    """The outcome of one plugin call. `error` is one line; `log_tail` the end of stdout/stderr."""

    ok: bool
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    log_tail: str = ""
    pid: int | None = None
    launch_s: float | None = None  # from the run's start until the child had its request

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class LogCapture:
    """Splits stdout/stderr into lines, hands each to `on_output`, keeps the last `cap_bytes` of them.

    Lines of both streams are kept interleaved in arrival order; stderr lines carry a "[stderr] " mark.
    """

    def __init__(self, cap_bytes: int, max_line_bytes: int, on_output: Callable[[str, str], None] | None) -> None:
        self.cap_bytes = cap_bytes
        self.max_line_bytes = max_line_bytes
        self.on_output = on_output
        self._lines: deque[str] = deque()
        self._size = 0
        self._pending = {fd: bytearray() for fd in STREAMS}
        self._skipping = dict.fromkeys(STREAMS, False)  # inside the cut-off rest of an over-long line

    def feed(self, fd: int, data: bytes) -> None:
        if fd not in STREAMS:
            return
        pending = self._pending[fd]
        start = 0
        while (nl := data.find(b"\n", start)) != -1:
            if self._skipping[fd]:
                self._skipping[fd] = False
            else:
                pending += data[start:nl]
                self._emit(fd, bytes(pending))
            pending.clear()
            start = nl + 1
        if not self._skipping[fd]:
            pending += data[start:]
            if len(pending) > self.max_line_bytes:
                self._emit(fd, bytes(pending))  # cut in _emit; the rest of this line is dropped
                pending.clear()
                self._skipping[fd] = True

    def flush(self, fd: int) -> None:
        """The stream closed: a last line without a newline still counts."""
        if fd in STREAMS and self._pending[fd]:
            if not self._skipping[fd]:
                self._emit(fd, bytes(self._pending[fd]))
            self._pending[fd].clear()

    def tail(self) -> str:
        return "\n".join(self._lines)

    def _emit(self, fd: int, raw: bytes) -> None:
        cut = len(raw) > self.max_line_bytes
        line = raw[: self.max_line_bytes].decode("utf-8", errors="replace").removesuffix("\r")
        if cut:
            line += " [line cut]"
        stream = STREAMS[fd]
        if self.on_output is not None:
            try:
                self.on_output(stream, line)
            except Exception:  # a failing log sink must not fail the plugin run
                logger.exception("plugins.on_output_failed stream=%s", stream)
        entry = line if fd == 1 else STDERR_MARK + line
        self._lines.append(entry)
        self._size += len(entry.encode()) + 1
        while self._size > self.cap_bytes and len(self._lines) > 1:
            self._size -= len(self._lines.popleft().encode()) + 1


class ResultProtocol(asyncio.Protocol):
    """Collects the first line written on the result pipe.

    `done` resolves at the newline, at EOF, or when the line passes `cap_bytes`. It does not wait
    for EOF after the newline: a grandchild that inherited the pipe may hold it open.
    """

    def __init__(self, cap_bytes: int) -> None:
        self.cap_bytes = cap_bytes
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.too_large = False
        self._buf = bytearray()
        self._complete = False

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        nl = data.find(b"\n")
        self._buf += data if nl == -1 else data[:nl]
        if len(self._buf) > self.cap_bytes:
            self.too_large = True
            self._buf.clear()
            self.done.set_result(None)
        elif nl != -1:
            self._complete = True
            self.done.set_result(None)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def line(self) -> bytes | None:
        """The result line, or None if none was completed (a line cut short by a crash does not count)."""
        return bytes(self._buf) if self._complete else None


def outcome(
    *,
    raw: bytes | None,
    reply: Any,
    too_large: bool,
    exit_code: int | None,
    timed_out: bool,
    timeout_s: float | None,
    duration_s: float,
    log_tail: str,
    pid: int,
) -> RunResult:
    """Turn what the child left behind into a RunResult: the first applicable explanation wins.

    `exit_code` is the shim's (0 after an ok result, 1 after an error) or the child's real one.
    """
    base = RunResult(
        ok=False, exit_code=exit_code, timed_out=timed_out, duration_s=duration_s, log_tail=log_tail, pid=pid
    )
    if raw is not None and not (isinstance(reply, dict) and "ok" in reply):
        base.error_type, base.error = "ProtocolError", f"the plugin process sent a malformed result: {raw[:200]!r}"
        return base
    if reply is not None:
        base.result = reply.get("result")
    if timed_out:
        base.error_type, base.error = "Timeout", f"timed out after {timeout_s}s"
    elif too_large:
        base.error_type, base.error = "ResultTooLarge", "the result is too large"
    elif reply is not None and not reply["ok"]:
        base.error_type = str(reply.get("error_type") or "Error")
        message = str(reply.get("error") or "").strip().splitlines()
        base.error = f"{base.error_type}: {message[0]}" if message else base.error_type
        base.traceback = reply.get("traceback")
    elif exit_code is not None and exit_code < 0:
        base.error_type, base.error = "Killed", f"killed by signal {_signal_name(-exit_code)}"
    elif exit_code != 0:
        what = "after returning a result" if reply is not None else "without a result"
        base.error_type, base.error = "Exit", f"exited with code {exit_code} {what}"
    elif reply is None:
        base.error_type, base.error = "ProtocolError", "exited without a result"
    else:
        base.ok = True
    return base


def _signal_name(number: int) -> str:
    try:
        sig = signal.Signals(number)
    except ValueError:
        return f"{number}"
    return sig.name + _SIGNAL_HINTS.get(sig, "")
