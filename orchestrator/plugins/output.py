"""What the launcher reads from a child: log lines from stdout/stderr, and the result line.

Both work on raw bytes as they arrive, with hard caps, so undecodable output, a line of a gigabyte
or 10,000 lines a second cannot break or stall a run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

logger = logging.getLogger(__name__)

STREAMS = {1: "stdout", 2: "stderr"}
STDERR_MARK = "[stderr] "


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
