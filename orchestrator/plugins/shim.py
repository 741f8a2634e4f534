"""Runs one plugin call inside the plugin's own interpreter: `python -I [-S] shim.py RESULT_FD`.

Stdlib only and no orchestrator imports: this file is executed by path in the plugin's venv
(the launcher runs its cached bytecode when the interpreter matches, to skip compiling it).
Every import here is paid on each launch: a bare `-I -S` interpreter starts in ~8 ms, `import
json` costs ~6 ms (it pulls in `re`), `os` ~1 ms, even `from __future__ import annotations`
0.3 ms. So JSON goes through the `_json` C accelerator, `posix` stands in for `os`, annotations
are strings, and asyncio, traceback, resource and ctypes are imported only when needed.

Protocol:
- stdin: one JSON line `{"plugin_dir", "entry_point", "params", "context", "limits"}`; the parent
  then keeps stdin open as a lifeline: EOF means the parent died and the whole process group is
  killed. The plugin itself gets /dev/null as stdin.
- fd RESULT_FD: one JSON line per request, `{"ok": true, "result": ...}` or `{"ok": false,
  "error_type", "error", "traceback"}`. The plugin's prints go to stdout/stderr and cannot touch it.
- exit code: 0 after a result with ok true, 1 after ok false; anything else (sys.exit(3), a
  signal) comes from the plugin and means there was no result.
`handle()` serves one request; a pooled worker can call it in a loop on the same lifeline.
"""

import _signal  # type: ignore[import-not-found]  # built in, no stub; `signal` would import enum (5 ms)
import _thread
import io
import posix as os  # built in; `os` would import os.path, stat and collections.abc first
import sys
import time

TYPE_CHECKING = False  # typing costs an import at every launch; mypy honours this name anyway
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    Dumps = Callable[[Any], str]

PR_SET_PDEATHSIG = 1
SIGKILL = 9
# The kernel's parent-death signal. Not SIGKILL: that would kill this process alone, usually before
# the lifeline thread has killed the group, and leave the plugin's own children running.
DEATH_SIGNAL: "int | None" = getattr(_signal, "SIGPWR", None)


def _codec() -> "tuple[Callable[[str], Any], Dumps]":
    """(loads, dumps) on the C accelerator, falling back to the json package if its API changed."""
    try:
        import _json

        class _Ctx:
            strict = True
            object_hook = None
            object_pairs_hook = None
            parse_float = float
            parse_int = int
            parse_constant = float  # NaN, Infinity, -Infinity
            memo: "dict[str, Any]" = {}  # noqa: RUF012 - the C scanner reads it as an attribute

        scan = _json.make_scanner(_Ctx())  # type: ignore[arg-type]  # duck-typed JSONDecoder

        def default(obj: object) -> "Any":
            raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

        def dumps(obj: "Any") -> str:
            encode = _json.make_encoder({}, default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
            return "".join(encode(obj, 0))

        def loads(text: str) -> "Any":
            obj, end = scan(text, 0)
            if text[end:].strip():
                raise ValueError("extra data after the request")
            return obj

        dumps({"probe": [1, 2.5, None, True, "x"]})
        return loads, dumps
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other Python implementations
        import json

        return json.loads, lambda obj: json.dumps(obj, separators=(",", ":"))


def _read_line(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)  # EOF: the parent went away before finishing the request
        nl = chunk.find(b"\n")
        if nl != -1:
            chunks.append(chunk[:nl])
            return b"".join(chunks)
        chunks.append(chunk)


def _kill_group(*_signal_args: object) -> None:
    os.killpg(0, SIGKILL)  # this process, the plugin's children and their children


def _start_watchdog(lifeline: int, parent_pid: int) -> None:
    """From the main thread: the death signal's handler (only it may install one), then the thread."""
    if DEATH_SIGNAL is not None:
        _signal.signal(DEATH_SIGNAL, _kill_group)
    _thread.start_new_thread(_watchdog, (lifeline, parent_pid))


def _watchdog(lifeline: int, parent_pid: int) -> None:
    """Kill the process group as soon as the parent is gone: EOF on the lifeline, or the kernel's signal."""
    # Most calls are over before this: ctypes costs ~4 ms to import, which short runs should not pay.
    time.sleep(0.2)
    try:
        import ctypes

        if DEATH_SIGNAL is not None:  # backup if this thread starves: the main thread's handler kills the group
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL)
    except (ImportError, OSError, AttributeError):
        pass  # no libc prctl here (not Linux): the lifeline alone has to do
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        _kill_group()
    try:
        while os.read(lifeline, 4096):
            pass
    except OSError:
        return  # lifeline unusable: the death signal remains
    _kill_group()


def _apply_limits(limits: "dict[str, Any] | None") -> None:
    if not limits:
        return
    import resource

    if limits.get("memory_mb"):
        size = int(limits["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if limits.get("cpu_seconds"):
        seconds = int(limits["cpu_seconds"])
        # soft limit -> SIGXCPU; the hard limit one second later -> SIGKILL if SIGXCPU is caught
        resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def _load_entry(plugin_dir: str, entry_point: str) -> "Callable[..., Any]":
    if plugin_dir not in sys.path:
        sys.path.insert(0, plugin_dir)
    module_name, _, func_name = entry_point.rpartition(".")
    __import__(module_name)
    func: Callable[..., Any] = getattr(sys.modules[module_name], func_name)
    if not callable(func):
        raise TypeError(f"entry point {entry_point!r} is a {type(func).__name__}, not a function")
    return func


def _accepted(func: "Callable[..., Any]", context: "dict[str, Any]") -> "dict[str, Any]":
    """Context keywords the function can take: all with **kwargs, else only those it names."""
    code = getattr(func, "__code__", None)
    if code is None or code.co_flags & 0x08:  # CO_VARKEYWORDS
        return context
    names = code.co_varnames[code.co_posonlyargcount : code.co_argcount + code.co_kwonlyargcount]
    return {k: v for k, v in context.items() if k in names}


async def _await(awaitable: "Awaitable[Any]") -> "Any":
    return await awaitable


def _error(exc: BaseException, error_type: "str | None" = None) -> "dict[str, Any]":
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _error.__code__.co_filename:
        tb = tb.tb_next  # the shim's own frames are noise for the plugin author
    return {
        "ok": False,
        "error_type": error_type or type(exc).__name__,
        "error": str(exc),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
    }


def handle(request: "dict[str, Any]", dumps: "Dumps") -> "tuple[str, bool]":
    """Run one request; return the result line (without newline) and whether it is ok."""
    entry_point = request.get("entry_point", "?")
    try:
        _apply_limits(request.get("limits"))
        func = _load_entry(request["plugin_dir"], entry_point)
        result = func(**(request.get("params") or {}), **_accepted(func, request.get("context") or {}))
        if hasattr(result, "__await__"):  # async def entry points: only then is asyncio imported
            import asyncio

            result = asyncio.run(_await(result))
    except Exception as exc:  # noqa: BLE001 - the plugin boundary: every error is reported, not raised
        return dumps(_error(exc)), False
    try:
        return dumps({"ok": True, "result": result}), True
    except (TypeError, ValueError, RecursionError) as exc:
        message = f"{entry_point} returned a {type(result).__name__} that is not JSON-serialisable: {exc}"
        return dumps({"ok": False, "error_type": "ResultNotSerializable", "error": message, "traceback": None}), False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def main() -> None:
    result_fd = int(sys.argv[1])
    os.set_inheritable(result_fd, False)  # children started with os.system/fork must not hold it open
    parent_pid = os.getppid()
    line = _read_line(0)
    if not line:
        _kill_group()
    # Keep the lifeline on a private descriptor; the plugin and its children get /dev/null as stdin.
    lifeline = os.dup(0)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _start_watchdog(lifeline, parent_pid)
    if isinstance(sys.stdout, io.TextIOWrapper):  # line-buffered: the job log follows the plugin live
        sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)
    loads, dumps = _codec()
    try:
        request = loads(line.decode("utf-8"))
        out, ok = handle(request, dumps)
    except Exception as exc:  # noqa: BLE001 - a malformed request is a parent bug, reported like a plugin error
        out, ok = dumps(_error(exc, "ShimError")), False
    try:
        sys.stdout.flush()  # the plugin's last lines before its result, in the log
    except (OSError, ValueError):
        pass  # the plugin closed or broke stdout: its result still goes out
    _write_all(result_fd, out.encode("ascii") + b"\n")
    os.close(result_fd)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
