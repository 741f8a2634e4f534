"""The plugin.json model and its loader (parameter checks: params.py, re-exported here).

Loading never imports the plugin: it may need packages the orchestrator does not have, so the
entry point is checked by parsing the module's source.
"""

from __future__ import annotations

import ast
import json
import logging
import platform
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator import nesting
from orchestrator.errors import ManifestError
from orchestrator.plugins.params import coerce_cli_params, json_type, type_matches, validate_params
from orchestrator.plugins.throttle import Throttle, key_fields

logger = logging.getLogger(__name__)

MANIFEST_FILE = "plugin.json"

ParamType = Literal["string", "integer", "number", "boolean", "array", "object"]
PARAM_TYPES: tuple[str, ...] = get_args(ParamType)
# validate_params and coerce_cli_params live in params.py and are re-exported here.
__all__ = [
    "MANIFEST_FILE",
    "PARAM_TYPES",
    "Limits",
    "Manifest",
    "ParamSpec",
    "ParamType",
    "PoolOptions",
    "check_entry_point",
    "coerce_cli_params",
    "is_plugin_name",
    "load_manifest",
    "requirement_problem",
    "specifier_matches",
    "validate_params",
]

# A real manifest is a few KiB; /api/plugins serves it to every dashboard poll.
MAX_MANIFEST_BYTES = 1024 * 1024
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]*$"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
ENTRY_POINT_PATTERN = rf"^{_IDENT}(\.{_IDENT})+$"
_ENV_NAME = re.compile(rf"^{_IDENT}$")


def requirement_problem(req: str) -> str | None:
    """Why `req` cannot be handed to the installer as one requirement, or None.

    A line break would start a new line of uv's requirement input, and a word starting with `-`
    is an installer option (`--index-url http://...`, `-r other.txt`, `--hash`): either could
    point the build at another index. The message names the option, never its value (an index
    URL may carry credentials).
    """
    if not req.strip():
        return "an empty string is not a requirement"
    if not req.isprintable():  # \n, \r, \t, NUL...: anything that could end uv's input line
        return f"requirement {req.split(maxsplit=1)[0][:40]!r}... holds a line break or control character"
    options = [word.split("=", 1)[0][:40] for word in req.split() if word.startswith("-")]
    if options:
        return f"{options[0]!r} is not a requirement but an installer option: write requirements like 'requests>=2.30'"
    return None


def is_plugin_name(name: str) -> bool:
    """A whole plugin name (no path separator, no dots, no trailing newline)."""
    return re.fullmatch(NAME_PATTERN, name) is not None


class ParamSpec(BaseModel):
    """One declared parameter of a plugin."""

    # strict: a manifest says `"required": true`, not `"yes"`; lax coercion would hide mistakes.
    model_config = ConfigDict(strict=True, frozen=True)

    type: ParamType
    required: bool = False
    default: Any = None
    enum: list[Any] | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _values_match_type(self) -> ParamSpec:
        if self.enum is not None:
            if not self.enum:
                raise ValueError("enum must not be empty")
            bad = [v for v in self.enum if not type_matches(self.type, v)]
            if bad:
                raise ValueError(f"enum values {bad!r} are not of type {self.type}")
        if self.default is not None:
            if not type_matches(self.type, self.default):
                raise ValueError(f"default {self.default!r} is not of type {self.type}")
            if self.enum is not None and self.default not in self.enum:
                raise ValueError(f"default {self.default!r} is not one of the enum values")
        return self


class Limits(BaseModel):
    """Resource limits applied in the child (rlimits) before the plugin is imported."""

    model_config = ConfigDict(strict=True, frozen=True)

    memory_mb: Annotated[int, Field(gt=0)] | None = None
    cpu_seconds: Annotated[int, Field(gt=0)] | None = None


class PoolOptions(BaseModel):
    """How the warm children of an `"isolation": "pooled"` plugin are kept (manifest key `pool`).

    A pooled plugin runs in long-lived children of its interpreter that import its module once and
    then run many jobs each, one at a time. Module-level state (caches, clients, globals, changes to
    os.environ other than the job's own variables) persists from one run to the next in the same
    child: that is the point of pooling, and the reason it is opt-in. A plugin that needs a fresh
    interpreter per run stays on "process". Async entry points share one event loop per child.

    Attributes:
        size: most children at once (jobs wait for a free one); default: as many as there are
            concurrent jobs of this plugin (bounded by the queue's concurrency).
        max_runs_per_process: a child is replaced after this many runs (Celery's max_tasks_per_child).
        max_memory_mb: a child whose resident memory exceeds this after a run is replaced (Celery's
            max_memory_per_child). The run itself completes; `limits.memory_mb` is the hard cap.
        idle_s: a child idle for this long is stopped; the pool shrinks to what is in use.
    """

    model_config = ConfigDict(strict=True, frozen=True)

    size: Annotated[int, Field(gt=0)] | None = None
    max_runs_per_process: Annotated[int, Field(gt=0)] | None = 1000
    max_memory_mb: Annotated[int, Field(gt=0)] | None = 512
    idle_s: Annotated[float, Field(gt=0)] = 60.0


class Manifest(BaseModel):
    """A plugin.json. The example manifest of REQUIREMENTS.md is valid as written."""

    model_config = ConfigDict(strict=True, frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    version: Annotated[str, Field(min_length=1)]
    description: str = ""
    author: str = ""
    entry_point: Annotated[str, Field(pattern=ENTRY_POINT_PATTERN)]
    parameters: dict[str, ParamSpec] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    python_version: str | None = None
    enabled: bool = True
    tags: list[str] = Field(default_factory=list)
    # -- optional extra keys (DESIGN.md "Plugins") --
    queue: Annotated[str, Field(min_length=1)] | None = None
    timeout: Annotated[float, Field(gt=0)] | None = None
    max_retries: Annotated[int, Field(ge=0)] | None = None
    retry_backoff: Annotated[float, Field(ge=0)] | None = None
    env: list[str] = Field(default_factory=list)
    limits: Limits | None = None
    # cluster-wide concurrency / rate / backlog caps, the author's default (config overrides it)
    throttle: Throttle | None = None
    # "process": a fresh child per run; "pooled": warm children reused across runs (see PoolOptions)
    isolation: Literal["process", "pooled"] = "process"
    pool: PoolOptions = Field(default_factory=PoolOptions)

    @field_validator("parameters")
    @classmethod
    def _param_names(cls, value: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        # Parameters arrive as keyword arguments: a name that is not an identifier cannot be declared.
        bad = [name for name in value if not name.isidentifier()]
        if bad:
            raise ValueError(f"parameter names must be Python identifiers: {', '.join(map(repr, bad))}")
        return value

    @field_validator("dependencies")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for i, req in enumerate(value):
            if problem := requirement_problem(req):
                raise ValueError(f"item {i}: {problem}")
        return [req.strip() for req in value]

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if not _ENV_NAME.fullmatch(name)]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(map(repr, bad))}")
        return value

    @model_validator(mode="after")
    def _throttle_key_params(self) -> Manifest:
        if self.throttle is not None and self.throttle.key is not None:
            missing = [n for n in key_fields(self.throttle.key) if n not in self.parameters]
            if missing:
                raise ValueError(
                    f"throttle.key {self.throttle.key!r} names undeclared parameters: {', '.join(missing)}"
                )
        return self

    @field_validator("python_version")
    @classmethod
    def _python_matches(cls, value: str | None) -> str | None:
        if value is None:
            return None
        running = platform.python_version()
        if not specifier_matches(value, running):
            raise ValueError(f"{value!r} does not match the orchestrator's Python {running}")
        return value


def specifier_matches(spec: str, version: str) -> bool:
    """PEP 440 check of `version` against `spec` (e.g. ">=3.8,<4"). Raises ValueError if `spec` is bad."""
    try:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet
    except ImportError:  # packaging is not a declared dependency: fall back to plain release numbers
        return _simple_specifier_matches(spec, version)
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidSpecifier as e:
        raise ValueError(f"{spec!r} is not a version specifier like '>=3.8'") from e


_CLAUSE = re.compile(r"^\s*(~=|==|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)(\.\*)?\s*$")


def _simple_specifier_matches(spec: str, version: str) -> bool:
    """A small subset of PEP 440 for when `packaging` is absent: numeric releases and ==X.*."""

    def parse(text: str) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", text)[:3])

    have = parse(version)
    for clause in spec.split(","):
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise ValueError(f"{spec!r} is not a version specifier like '>=3.8'")
        op, text, wildcard = match.groups()
        want = parse(text)
        width = len(want)
        cut, padded = have[:width], want + (0,) * (len(have) - width)
        ok = {
            "==": cut == want if wildcard else have == padded,
            "!=": cut != want if wildcard else have != padded,
            ">=": have >= padded,
            "<=": have <= padded,
            ">": have > padded,
            "<": have < padded,
            "~=": have >= padded and have[: max(width - 1, 1)] == want[: max(width - 1, 1)],
        }[op]
        if not ok:
            return False
    return True


def _format_error(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "missing":
        return f"'{loc}' is required"
    if kind == "literal_error":
        expected = str(err["ctx"]["expected"]).replace("'", "").replace(" or ", ", ")
        return f"{loc}: must be one of {expected}"
    if kind == "string_pattern_mismatch" and loc == "entry_point":
        return "entry_point: must look like 'module.function' (e.g. 'main.run')"
    if kind == "string_pattern_mismatch" and loc == "name":
        return "name: must start with a letter or '_' and contain only letters, digits, '_' and '-'"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def _unknown_keys(raw: dict[str, Any]) -> list[str]:
    """Unknown keys are reported, not refused: newer manifests must still load on older orchestrators."""
    warnings = [f"unknown key '{key}' ignored" for key in raw if key not in Manifest.model_fields]
    params = raw.get("parameters")
    if isinstance(params, dict):
        for pname, spec in params.items():
            if isinstance(spec, dict):
                warnings += [
                    f"unknown key 'parameters.{pname}.{key}' ignored"
                    for key in spec
                    if key not in ParamSpec.model_fields
                ]
    for section, model in (("limits", Limits), ("pool", PoolOptions)):
        value = raw.get(section)
        if isinstance(value, dict):
            warnings += [f"unknown key '{section}.{key}' ignored" for key in value if key not in model.model_fields]
    if "pool" in raw and raw.get("isolation") != "pooled":
        warnings.append("'pool' is ignored unless isolation is 'pooled'")
    return warnings


def load_manifest(plugin_dir: Path) -> tuple[Manifest, list[str]]:
    """Read and check `plugin_dir/plugin.json` and its entry point (blocking file I/O).

    Returns:
        The manifest and the warnings (unknown keys).

    Raises:
        ManifestError: one message naming each problem.
    """
    try:
        return _load_manifest(plugin_dir)
    except RecursionError as e:  # a walk deeper than the checks foresaw: still one clear reason
        raise ManifestError(f"{MANIFEST_FILE}: nested too deeply") from e


def _load_manifest(plugin_dir: Path) -> tuple[Manifest, list[str]]:
    path = plugin_dir / MANIFEST_FILE
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)  # never more than the cap into memory
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"{MANIFEST_FILE}: larger than {MAX_MANIFEST_BYTES // 1024} KiB")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{MANIFEST_FILE}: not found in {plugin_dir}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{MANIFEST_FILE}: cannot be read: {e}") from e
    try:
        raw = nesting.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{MANIFEST_FILE}: bad JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except nesting.TooDeep as e:
        raise ManifestError(f"{MANIFEST_FILE}: {e}") from e
    if not isinstance(raw, dict):
        raise ManifestError(f"{MANIFEST_FILE}: must be a JSON object, got {json_type(raw)}")
    warnings = _unknown_keys(raw)
    try:
        manifest = Manifest.model_validate({k: v for k, v in raw.items() if k in Manifest.model_fields})
    except ValidationError as e:
        problems = "; ".join(_format_error(err) for err in e.errors(include_url=False))
        raise ManifestError(f"{MANIFEST_FILE}: {problems}") from e
    check_entry_point(plugin_dir, manifest.entry_point)
    return manifest, warnings


def check_entry_point(plugin_dir: Path, entry_point: str) -> None:
    """Make sure the entry point's module exists and defines the name at top level, without importing it.

    Raises:
        ManifestError: the module file is missing, does not parse, or lacks the name.
    """
    module, _, func = entry_point.rpartition(".")
    parts = module.split(".")
    candidates = [plugin_dir.joinpath(*parts[:-1], parts[-1] + ".py"), plugin_dir.joinpath(*parts, "__init__.py")]
    source_path = next((p for p in candidates if p.is_file()), None)
    if source_path is None:
        rel = candidates[0].relative_to(plugin_dir)
        raise ManifestError(f"entry point {entry_point!r}: module file {rel} not found")
    rel = source_path.relative_to(plugin_dir)
    try:
        tree = ast.parse(source_path.read_bytes(), filename=str(rel))
    except SyntaxError as e:
        raise ManifestError(f"entry point {entry_point!r}: {rel} has a syntax error at line {e.lineno}: {e.msg}") from e
    except (OSError, ValueError) as e:
        raise ManifestError(f"entry point {entry_point!r}: {rel} cannot be read: {e}") from e
    names, star_import = _defined_names(tree.body)
    if func not in names and not star_import:
        raise ManifestError(f"entry point {entry_point!r}: module {rel} has no function {func!r}")


def _defined_names(body: list[ast.stmt]) -> tuple[set[str], bool]:
    """Names bound at module level (including inside top-level if/try/with), and whether `import *` occurs."""
    names: set[str] = set()
    star = False
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                star |= alias.name == "*"
                names.add(alias.asname or alias.name.split(".")[0])
        else:
            nested: list[ast.stmt] = []
            if isinstance(node, ast.If | ast.Try | ast.With):
                nested = node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
                for handler in getattr(node, "handlers", []):
                    nested += handler.body
            sub_names, sub_star = _defined_names(nested)
            names |= sub_names
            star |= sub_star
    return names, star
