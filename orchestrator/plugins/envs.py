"""Per-plugin virtualenvs, built with uv, shared by every plugin with the same requirements.

A venv lives at `<venv_dir>/<key>`, where the key hashes (interpreter, sorted requirements). It is
built in a staging folder next to it, moved into place with one rename, checked, and only then
marked ready: a half-built venv is never used. Builds of one key are serialised by an asyncio
lock inside the process and by flock(2) across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import platform
import secrets
import shutil
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from orchestrator.errors import PluginEnvError
from orchestrator.logs import mask_secrets
from orchestrator.plugins.manifest import Manifest, requirement_problem

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]
PythonCmd = tuple[Path, list[str]]

# -I: no user site, no PYTHON* env, no cwd on sys.path; -S: no site-packages at all, so a plugin
# without dependencies sees only the stdlib and starts fastest.
NO_DEPS_FLAGS = ("-I", "-S")
VENV_FLAGS = ("-I",)
REQUIREMENTS_FILE = "requirements.txt"
READY_MARKER = ".orchestrator-ready"
REQUIREMENTS_RECORD = ".orchestrator-requirements.txt"
_STDERR_TAIL_LINES = 40
_STDERR_TAIL_CHARS = 4000
# What a build sees of our environment: uv and pip settings (index URLs and their credentials are
# meant for the build), proxies, CA bundles, and the basics. Never the rest: a dependency's build
# backend runs arbitrary code, and the orchestrator's environment holds DATABASE_URL, ES_PASSWORD,
# ORCH_API_TOKEN... (README "Trust boundary").
_UV_ENV_KEEP = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "XDG_CACHE_HOME",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC",
})  # fmt: skip
_UV_ENV_PREFIXES = ("UV_", "PIP_")
# Of those, the ones that would make uv target or configure another environment than the one we name.
_UV_ENV_DROP = frozenset({"UV_PROJECT_ENVIRONMENT", "UV_PYTHON"})


def build_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a uv build: the allowlisted names of `environ`, nothing else."""
    env = {
        k: v
        for k, v in environ.items()
        if (k in _UV_ENV_KEEP or k.startswith(_UV_ENV_PREFIXES)) and k not in _UV_ENV_DROP
    }
    env["UV_PYTHON_DOWNLOADS"] = "never"  # use base_python, never fetch another interpreter
    env["NO_COLOR"] = "1"
    return env


def _resolve_python(base_python: str | None) -> Path:
    """The real interpreter file: a venv's python or a pyenv shim on PATH would cost start-up time."""
    if base_python is None:
        base_python = getattr(sys, "_base_executable", None) or sys.executable
    elif os.sep not in base_python:
        base_python = shutil.which(base_python) or base_python
    return Path(os.path.realpath(base_python))


def _uv_bin() -> str:
    import uv  # the PyPI package ships the binary; imported lazily because only builds need it

    return str(uv.find_uv_bin())


class VenvManager:
    """Finds, and when asked builds, the virtualenv each plugin runs in.

    Args:
        venv_dir: where venvs live (`PLUGIN_VENV_DIR`, or `Settings.venv_dir`).
        base_python: interpreter the venvs are made from; default: the one running the orchestrator.
        build_timeout_s: a build taking longer fails (a hung index must not hold the lock forever).
    """

    def __init__(self, venv_dir: Path, *, base_python: str | None = None, build_timeout_s: float = 900.0) -> None:
        self.venv_dir = Path(venv_dir)
        self.base_python = _resolve_python(base_python)
        self.build_timeout_s = build_timeout_s
        own = _resolve_python(None)
        # The version goes into the key so an interpreter upgrade gets fresh venvs; for a foreign
        # interpreter its resolved path stands in (pyenv and distro paths carry the version).
        self._python_tag = (
            f"{sys.implementation.name}-{platform.python_version()}"
            if self.base_python == own
            else f"path:{self.base_python}"
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0  # venvs built by this manager: for logs and tests

    # -- lookups (cheap, blocking file reads: call from a thread when on the loop) --

    def requirements_for(self, plugin_dir: Path, manifest: Manifest) -> list[str]:
        """The manifest's dependencies plus the requirement lines of requirements.txt, deduplicated.

        Raises:
            PluginEnvError: requirements.txt exists but cannot be read.
        """
        reqs = list(manifest.dependencies)
        path = plugin_dir / REQUIREMENTS_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError) as e:
            raise PluginEnvError(f"{REQUIREMENTS_FILE}: cannot be read: {e}") from e
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                if problem := requirement_problem(line):  # -r, --index-url...: never passed to uv
                    raise PluginEnvError(f"{REQUIREMENTS_FILE} line {number}: {problem}")
                reqs.append(line)
        return list(dict.fromkeys(reqs))

    def env_key(self, requirements: list[str]) -> str | None:
        """A short hash of (interpreter, sorted requirements); None when there is nothing to install."""
        if not requirements:
            return None
        blob = "\n".join([self._python_tag, *sorted(set(requirements))])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def venv_path(self, key: str) -> Path:
        return self.venv_dir / key

    def python_for_key(self, key: str | None) -> PythonCmd | None:
        """Interpreter and flags for an env key, or None if that venv is not built yet."""
        if key is None:
            return self.base_python, list(NO_DEPS_FLAGS)
        path = self.venv_path(key)
        if (path / READY_MARKER).is_file():
            return path / "bin" / "python", list(VENV_FLAGS)
        return None

    def python_for(self, plugin_dir: Path, manifest: Manifest) -> PythonCmd | None:
        """Interpreter and flags to run this plugin with, or None if its venv must be built first."""
        return self.python_for_key(self.env_key(self.requirements_for(plugin_dir, manifest)))

    # -- building --

    async def ensure(self, plugin_dir: Path, manifest: Manifest, *, on_progress: ProgressFn | None = None) -> PythonCmd:
        """Build the plugin's venv unless it exists; return the interpreter and flags to run it with.

        Raises:
            PluginEnvError: the build failed (the message carries the end of uv's output).
        """
        reqs = await asyncio.to_thread(self.requirements_for, plugin_dir, manifest)
        key = self.env_key(reqs)
        ready = await asyncio.to_thread(self.python_for_key, key)
        if ready is not None:
            return ready
        assert key is not None  # python_for_key never returns None for the no-requirements case
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock, self._file_lock(key, on_progress):
            # Re-check under the lock: another coroutine or process may have just built it.
            ready = await asyncio.to_thread(self.python_for_key, key)
            if ready is None:
                await self._build(key, reqs, manifest.name, on_progress or _ignore)
                ready = self.venv_path(key) / "bin" / "python", list(VENV_FLAGS)
        return ready

    @contextlib.asynccontextmanager
    async def _file_lock(self, key: str, on_progress: ProgressFn | None) -> AsyncIterator[None]:
        fd = await asyncio.to_thread(self._open_lock_file, key)
        try:
            waited = False
            while True:
                try:
                    # Non-blocking attempts: a thread blocked in flock could not be cancelled.
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited and on_progress is not None:
                        on_progress(f"waiting for another process building virtualenv {key}")
                    waited = True
                    await asyncio.sleep(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open_lock_file(self, key: str) -> int:
        self.venv_dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.venv_dir / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)

    async def _build(self, key: str, reqs: list[str], plugin: str, progress: ProgressFn) -> None:
        final = self.venv_path(key)
        staging = self.venv_dir / f".build-{key}-{os.getpid()}-{secrets.token_hex(4)}"
        self.builds += 1
        started = time.monotonic()
        shown = [mask_secrets(r) for r in reqs]  # an index URL may carry credentials
        progress(f"building virtualenv {key} for {plugin}: {', '.join(shown)}")
        logger.info("plugins.venv_build_started plugin=%s key=%s requirements=%s", plugin, key, shown)
        await asyncio.to_thread(self._remove_leftovers, key)
        try:
            async with asyncio.timeout(self.build_timeout_s):
                # --relocatable: scripts use relative paths, so the venv still works after the rename.
                await self._uv(
                    ["venv", "--relocatable", "--no-project", "--no-config", "--python", str(self.base_python)],
                    str(staging),
                    progress=progress,
                    what="creating the virtualenv",
                )
                record = staging / REQUIREMENTS_RECORD
                await asyncio.to_thread(record.write_text, "\n".join(reqs) + "\n", encoding="utf-8")
                python = staging / "bin" / "python"
                await self._uv(
                    ["pip", "install", "--no-config", "--python", str(python), "-r"],
                    str(record),
                    progress=progress,
                    what="installing requirements",
                )
                await asyncio.to_thread(os.rename, staging, final)
                await self._verify(final)
            await asyncio.to_thread((final / READY_MARKER).write_text, f"{time.time()}\n")
        except TimeoutError:
            await asyncio.to_thread(self._remove_leftovers, key)
            raise PluginEnvError(
                f"building the virtualenv for {plugin} timed out after {self.build_timeout_s}s"
            ) from None
        except Exception:
            await asyncio.to_thread(self._remove_leftovers, key)
            raise
        took = time.monotonic() - started
        progress(f"virtualenv {key} ready in {took:.1f}s")
        logger.info("plugins.venv_built plugin=%s key=%s seconds=%.1f", plugin, key, took)

    def _remove_leftovers(self, key: str) -> None:
        """Under the lock: staging folders of crashed builds, and a final folder that never got its marker."""
        for path in self.venv_dir.glob(f".build-{key}-*"):
            shutil.rmtree(path, ignore_errors=True)
        final = self.venv_path(key)
        if final.exists() and not (final / READY_MARKER).exists():
            shutil.rmtree(final, ignore_errors=True)

    async def _verify(self, venv: Path) -> None:
        python = venv / "bin" / "python"
        proc = await asyncio.create_subprocess_exec(
            str(python),
            "-I",
            "-c",
            "import sys; print(sys.prefix)",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        prefix = out.decode(errors="replace").strip()
        if proc.returncode != 0 or not await asyncio.to_thread(_same_path, prefix, venv):
            detail = err.decode(errors="replace").strip()[-_STDERR_TAIL_CHARS:] or f"sys.prefix is {prefix!r}"
            raise PluginEnvError(f"the virtualenv at {venv} does not run after being moved into place: {detail}")

    async def _uv(self, args: list[str], target: str, *, progress: ProgressFn, what: str) -> None:
        env = build_env(os.environ)
        proc = await asyncio.create_subprocess_exec(
            _uv_bin(),
            *args,
            target,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,  # uv reports progress and errors on stderr
            env=env,
        )
        tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        try:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line = mask_secrets(raw.decode("utf-8", errors="replace").rstrip())
                if line:
                    tail.append(line)
                    progress(line)
            code = await proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        if code != 0:
            output = "\n".join(tail)[-_STDERR_TAIL_CHARS:]
            raise PluginEnvError(f"uv failed {what} (exit {code}):\n{output}")


def _ignore(_message: str) -> None:
    pass


def _same_path(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)
