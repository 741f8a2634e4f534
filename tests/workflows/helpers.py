"""The workflow tests' plugin: returns its name and what it was handed as `previous`; can fail,
sleep, and append one line per run to a file (so a test counts how often a step ran)."""

from __future__ import annotations

import json
from pathlib import Path

STEP_MAIN = """
import json, os, time

def run(name="x", fail=False, sleep=0.0, record=None, fail_until=None, hold_until=None, previous=None, **ctx):
    print(f"step {name}")  # a log line: the job's log stream lives as long as its workflow
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"name": name, "job": ctx["job_id"], "previous": previous}) + "\\n")
    time.sleep(sleep)
    while hold_until and not os.path.exists(hold_until):
        time.sleep(0.02)
    if fail or (fail_until and not os.path.exists(fail_until)):
        raise RuntimeError(f"{name} failed on purpose")
    return {"name": name, "previous": previous}
"""

STEP_PARAMS = {
    "name": {"type": "string", "required": False, "default": "x"},
    "fail": {"type": "boolean", "required": False, "default": False},
    "sleep": {"type": "number", "required": False, "default": 0},
    "record": {"type": "string", "required": False},
    "fail_until": {"type": "string", "required": False},
    "hold_until": {"type": "string", "required": False},
}


def make_step_plugin(plugins_dir: Path, name: str = "step") -> None:
    folder = plugins_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": name, "version": "1.0.0", "description": "workflow test step", "author": "tests",
        "entry_point": "main.run", "parameters": STEP_PARAMS, "max_retries": 0, "isolation": "pooled",
    }  # fmt: skip
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(STEP_MAIN)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
