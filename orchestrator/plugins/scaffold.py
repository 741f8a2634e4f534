"""`orchestrator plugins new NAME`: a minimal, valid plugin folder to start from."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from orchestrator.errors import PluginError
from orchestrator.plugins.manifest import MANIFEST_FILE, is_plugin_name

logger = logging.getLogger(__name__)

_MAIN_TEMPLATE = '''"""{name}: describe what this plugin does."""

from __future__ import annotations

from typing import Any


def run(message: str, change_event: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    """Entry point named in plugin.json (`main.run`).

    Args:
        message: the one declared parameter (see `parameters` in plugin.json).
        change_event: set when a database change triggered the run (table, operation, row, ...).
        **context: job_id, attempt, queue, source, ... (whatever the orchestrator passes).

    Returns:
        Anything JSON-serialisable; by convention {{"status": "success", "result": ...}}.
        Raise an exception to fail the job (it is retried if the manifest allows).
        print() output lands in the job's log.
    """
    print(f"{name}: job {{context.get('job_id')}} got message={{message!r}}")
    result: dict[str, Any] = {{"echo": message}}
    if change_event is not None:
        result["table"] = change_event.get("table")
    return {{"status": "success", "result": result}}
'''


def manifest_template(name: str) -> tuple[str, str]:
    """The text of plugin.json and main.py for a new plugin called `name`."""
    manifest = {
        "name": name,
        "version": "0.1.0",
        "description": f"{name} plugin",
        "author": "",
        "entry_point": "main.run",
        "parameters": {
            "message": {"type": "string", "required": True, "description": "what to process"},
        },
        "dependencies": [],
        "enabled": True,
        "tags": [],
    }
    return json.dumps(manifest, indent=2) + "\n", _MAIN_TEMPLATE.format(name=name)


def create_plugin(plugins_dir: Path, name: str) -> Path:
    """Write `<plugins_dir>/<name>/plugin.json` and `main.py`; return the new folder.

    Raises:
        PluginError: the name is not valid, or the folder already exists.
    """
    if not is_plugin_name(name):
        raise PluginError(f"bad plugin name {name!r}: start with a letter or '_', then letters, digits, '_' or '-'")
    folder = plugins_dir / name
    try:
        folder.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise PluginError(f"{folder} already exists") from None
    manifest_text, main_text = manifest_template(name)
    (folder / MANIFEST_FILE).write_text(manifest_text, encoding="utf-8")
    (folder / "main.py").write_text(main_text, encoding="utf-8")
    logger.info("plugins.created name=%s path=%s", name, folder)
    return folder
