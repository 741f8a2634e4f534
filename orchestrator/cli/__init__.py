"""Every command of `orchestrator`: parsing, the old verbs, terminal rendering and `top`.

Nothing outside this package imports it; `main` is the console script's entry point.
"""

from orchestrator.cli.main import main

__all__ = ["main"]
