"""What every package's settings section shares (a leaf: pydantic only).

Each package keeps its section in its own `settings.py` (pydantic models, nothing else of the
project); config.py composes them into `Settings`. A section's fields stay top-level keys of the
TOML file and keep their documented environment names: the sections group code, not the file.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field


def env_alias(*names: str, default: Any = None) -> Any:
    """A field read from these environment names. The TOML key is the field name, never an env name."""
    return Field(default=default, validation_alias=AliasChoices(*names))
