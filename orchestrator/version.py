"""The installed package's version: a leaf module, so any layer can name it without importing the
package's public API (orchestrator/__init__.py imports the Client and all it needs)."""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("orchestrator")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
