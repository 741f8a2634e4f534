"""Runs plugin calls inside the plugin's own interpreter: `python -I [-S] shim.py [--user UID:GID:SITE] RESULT_FD [--cwd DIR] [--pooled ...]`.

Stdlib only and no orchestrator imports: this file is executed by path in the plugin's venv
(the launcher runs its cached bytecode when the interpreter matches, to skip compiling it).
Every import here is paid on each launch: a bare `-I -S` interpreter starts in ~8 ms, `import
json` costs ~6 ms (it pulls in `re`), `os` ~1 ms, even `from __future__ import annotations`
0.3 ms. So JSON goes through the `_json` C accelerator, `posix` stands in for `os`, annotations
are strings, and asyncio, traceback, resource and ctypes are imported only when needed.

One-shot protocol (`shim.py RESULT_FD`, isolation "process"):
- stdin: one JSON line `{"plugin_dir", "entry_point", "params", "context", "limits"[, "env"]}`;
  the parent then keeps stdin open as a lifeline: EOF means the parent died and the whole process
  group is killed. The plugin itself gets /dev/null as stdin. A prestarted child waits for that
  line already past start-up; `env` (the job's whole environment) is then applied to os.environ
  before anything of the plugin is imported.
- fd RESULT_FD: one JSON line, `{"ok": true, "result": ...}` or `{"ok": false, "error_type",
  "error", "traceback"}`. The plugin's prints go to stdout/stderr and cannot touch it.
- exit code: 0 after a result with ok true, 1 after ok false; anything else (sys.exit(3), a
  signal) comes from the plugin and means there was no result.

Pooled protocol (`shim.py RESULT_FD --pooled LIFELINE_FD TOKEN`, isolation "pooled"):
- stdin: one request line per job, the next only after the previous result; EOF means "stop"
  (atexit handlers run, then the group is killed). LIFELINE_FD is a pipe the parent never writes:
  its EOF (the parent died) kills the group at once, even in the middle of a job.
- fd RESULT_FD: per request one line `SYNC RSS_KB {json}`: RSS_KB is this process's resident
  memory after the run (0 unless the request asks "rss"); SYNC tells which of stdout (1) and
  stderr (2) got the end-of-job marker `\0orch-sync:TOKEN`. A stream gets the marker only if the
  parent has not read all of it yet (FIONREAD), so lines printed by a job are attributed to it
  and the common case costs no extra wake-up in the parent.
- If the plugin closed or broke stdout/stderr, the child exits after sending its result, and says
  so in that result's SYNC (bit 4), so the parent never hands the next job to a child on its way out.
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
FIONREAD = 0x541B  # Linux; elsewhere every job's output ends with a marker
_state: "dict[str, Any]" = {}  # pooled child: the event loop for async entry points, limits applied


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


def _start_watchdog(lifeline: int, parent_pid: int, *, now: bool = False) -> None:
    """From the main thread: the death signal's handler (only it may install one), then the thread.

    A one-shot child arms the death signal from the thread after 0.2 s: most calls are over before,
    and ctypes costs ~4 ms to import. A warm child (`now`) arms it here, before serving: ctypes
    imports os, and a thread importing os while a job sets its environment would race with it.
    """
    if DEATH_SIGNAL is not None:
        _signal.signal(DEATH_SIGNAL, _kill_group)
    if now:
        _arm_death_signal(parent_pid)
    _thread.start_new_thread(_watchdog, (lifeline, parent_pid, not now))


def _arm_death_signal(parent_pid: int) -> None:
    try:
        import ctypes

        if DEATH_SIGNAL is not None:  # backup if the watchdog starves: the main thread's handler kills the group
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, DEATH_SIGNAL)
    except (ImportError, OSError, AttributeError):
        pass  # no libc prctl here (not Linux): the lifeline alone has to do
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        _kill_group()


def _watchdog(lifeline: int, parent_pid: int, arm: bool) -> None:
    """Kill the process group as soon as the parent is gone: EOF on the lifeline, or the kernel's signal."""
    if arm:
        time.sleep(0.2)
        _arm_death_signal(parent_pid)
    try:
        while os.read(lifeline, 4096):
            pass
    except OSError:
        return  # lifeline unusable: the death signal remains
    _kill_group()


def _apply_limits(limits: "dict[str, Any] | None", per_run: bool = False) -> None:
    if not limits:
        return
    import resource

    if limits.get("memory_mb") and not (per_run and _state.get("memory_mb") == limits["memory_mb"]):
        size = int(limits["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
        _state["memory_mb"] = limits["memory_mb"]
    if limits.get("cpu_seconds"):
        seconds = int(limits["cpu_seconds"])
        if per_run:
            # RLIMIT_CPU counts the whole life of the process: a warm child gets `seconds` more than it
            # has used so far. Only the soft limit (SIGXCPU): a hard limit could never be raised again.
            usage = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(usage.ru_utime + usage.ru_stime) + 1 + seconds
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
        else:
            # soft limit -> SIGXCPU; the hard limit one second later -> SIGKILL if SIGXCPU is caught
            resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))


def _set_env(env: "dict[str, str]") -> None:
    """Make the process environment exactly `env` (the job's), before the plugin is imported or called."""
    if "os" in sys.modules:  # os.environ exists: change it (it calls putenv/unsetenv itself)
        import os as module  # not sys.modules["os"]: this waits if another thread is still importing it

        environ = module.environ
        for key in [k for k in environ if k not in env]:
            del environ[key]
        for key, value in env.items():
            if environ.get(key) != value:
                environ[key] = value
        return
    raw = os.environ  # bytes -> bytes; a later `import os` builds os.environ from it
    want = {k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape") for k, v in env.items()}
    for name in [k for k in raw if k not in want]:
        os.unsetenv(name)
        del raw[name]
    for name, setting in want.items():
        if raw.get(name) != setting:
            os.putenv(name, setting)
            raw[name] = setting


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


def _run_in_child_loop(awaitable: "Awaitable[Any]") -> "Any":
    """Pooled children keep one event loop: clients a plugin caches stay bound to a live loop."""
    import asyncio

    loop = _state.get("loop")
    if loop is None or loop.is_closed():
        loop = _state["loop"] = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
    return loop.run_until_complete(_await(awaitable))


def handle(request: "dict[str, Any]", dumps: "Dumps", pooled: bool = False) -> "tuple[str, bool]":
    """Run one request; return the result line (without newline) and whether it is ok."""
    entry_point = request.get("entry_point", "?")
    try:
        if request.get("env") is not None:
            _set_env(request["env"])
        _apply_limits(request.get("limits"), per_run=pooled)
        func = _load_entry(request["plugin_dir"], entry_point)
        result = func(**(request.get("params") or {}), **_accepted(func, request.get("context") or {}))
        if hasattr(result, "__await__"):  # async def entry points: only then is asyncio imported
            if pooled:
                result = _run_in_child_loop(result)
            else:
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


def _flush_stdio() -> None:
    for stream in {id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}.values():
        try:
            stream.flush()  # type: ignore[union-attr]  # None is caught below
        except (AttributeError, OSError, ValueError):
            pass  # the plugin closed or broke it: its result still goes out


def _close_other_fds(keep: "list[int]") -> None:
    low = 3
    for fd in sorted(keep):
        if fd > low:
            os.closerange(low, fd)
        low = max(low, fd + 1)
    os.closerange(low, 1 << 20)  # Linux: one close_range(2) call


def _become(user: str) -> None:
    """`--user UID:GID:SITE` (plugin_user): become that user for good, before anything of the plugin
    is read. The interpreter was started with -S, so no .pth file of the plugin's dependencies ran
    with our rights; SITE=1 (a virtualenv) then adds its site-packages as the new user."""
    uid, gid, site = (int(x) for x in user.split(":"))
    was_root = os.geteuid() == 0
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if not was_root:  # capabilities given as ambient ones (no root): they must not stay with the plugin
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        libc.capset(header, (ctypes.c_uint32 * 6)())  # empty effective, permitted, inheritable
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - the switch did not hold: never run the plugin like that
        _write_all(2, b"shim: could not give up the orchestrator's user\n")
        os._exit(70)
    if site:
        import site as _site

        _site.main()


def main() -> None:
    args = sys.argv[1:]
    user = None
    if args[:1] == ["--user"]:
        user, args = args[1], args[2:]
    result_fd = int(args[0])
    args = args[1:]
    if args[:1] == ["--cwd"]:  # started by posix_spawn, which has no chdir of its own (spawn.py)
        os.chdir(args[1])
        args = args[2:]
        # nor a close_fds: descriptors the parent left inheritable (a library's, a test runner's) go here
        _close_other_fds([result_fd, int(args[1])] if args[:1] == ["--pooled"] else [result_fd])
    if user is not None:
        _become(user)
    os.set_inheritable(result_fd, False)  # children started with os.system/fork must not hold it open
    parent_pid = os.getppid()
    # Done before the request arrives: a prestarted child has it behind it when its job comes.
    if isinstance(sys.stdout, io.TextIOWrapper):  # line-buffered: the job log follows the plugin live
        sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)
    loads, dumps = _codec()
    if args[:1] == ["--pooled"]:
        serve(result_fd, int(args[1]), args[2].encode(), parent_pid, loads, dumps)
        return
    line = _read_line(0)
    if not line:
        _kill_group()
    # Keep the lifeline on a private descriptor; the plugin and its children get /dev/null as stdin.
    lifeline = os.dup(0)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _start_watchdog(lifeline, parent_pid)
    try:
        request = loads(line.decode("utf-8"))
        out, ok = handle(request, dumps)
    except Exception as exc:  # noqa: BLE001 - a malformed request is a parent bug, reported like a plugin error
        out, ok = dumps(_error(exc, "ShimError")), False
    _flush_stdio()  # the plugin's last lines before its result, in the log
    _write_all(result_fd, out.encode("ascii") + b"\n")
    os.close(result_fd)
    if not ok:
        sys.exit(1)


# -- pooled mode -----------------------------------------------------------------------------------


def _next_line(fd: int, buf: bytearray) -> "bytes | None":
    """The next request line from `fd` (None at EOF); `buf` keeps what was read past it."""
    searched = 0
    while True:
        nl = buf.find(b"\n", searched)
        if nl != -1:
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            return line
        searched = len(buf)
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        buf += chunk


def _unread(fd: int) -> bool:
    """Whether the pipe on `fd` still holds bytes the parent has not read (True when unsure)."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        import fcntl

        count = fcntl.ioctl(fd, FIONREAD, b"\0\0\0\0")
    except (ImportError, OSError):
        return True
    return int.from_bytes(count, sys.byteorder) > 0


_EXITING = 4  # SYNC bit: this child exits after this result


def _end_of_job(marker: bytes, stdout: "Any", stderr: "Any") -> "tuple[int, bool]":
    """Flush the job's output, mark its end where needed; return (SYNC mask, stdio still usable)."""
    _flush_stdio()
    sys.stdout, sys.stderr = stdout, stderr  # a plugin that swapped them affects only its own run
    usable = not (getattr(stdout, "closed", True) or getattr(stderr, "closed", True))
    sync = 0
    for fd in (1, 2):
        if _unread(fd):
            try:
                os.write(fd, marker)  # short: one atomic pipe write
                sync |= fd
            except OSError:
                usable = False
    return sync, usable


def _rss_kb() -> int:
    try:
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            pages = int(os.read(fd, 256).split()[1])
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return 0
    return pages * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _stop() -> None:
    """Told to stop between jobs (or the parent is gone): run atexit handlers, then end the group."""
    try:
        import atexit

        atexit._run_exitfuncs()
    finally:
        _kill_group()


def serve(
    result_fd: int, lifeline: int, marker_token: bytes, parent_pid: int, loads: "Callable[[str], Any]", dumps: "Dumps"
) -> None:
    """A warm child: one request after another, each answered on result_fd, until stdin closes."""
    os.set_inheritable(lifeline, False)
    requests = os.dup(0)  # private; the plugin and its children get /dev/null as stdin
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _start_watchdog(lifeline, parent_pid, now=True)  # long-lived: arm everything before the first job
    marker = b"\0orch-sync:" + marker_token
    stdout, stderr = sys.stdout, sys.stderr
    buf = bytearray()
    while True:
        line = _next_line(requests, buf)
        if line is None:
            _stop()
        want_rss = False
        try:
            request = loads(line.decode("utf-8"))  # type: ignore[union-attr]  # None never gets here
            want_rss = bool(request.get("rss"))
            out, _ok = handle(request, dumps, pooled=True)
        except Exception as exc:  # noqa: BLE001 - a malformed request is a parent bug, reported like a plugin error
            out = dumps(_error(exc, "ShimError"))
        sync, usable = _end_of_job(marker, stdout, stderr)
        header = b"%d %d " % (sync | (0 if usable else _EXITING), _rss_kb() if want_rss else 0)
        _write_all(result_fd, header + out.encode("ascii") + b"\n")
        if not usable:
            sys.exit(0)  # the parent sees the exit and starts a new child for the next job


if __name__ == "__main__":
    main()
