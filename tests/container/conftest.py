"""The image under test, built once per session from the unchanged Dockerfile.

scripts/test starts `scripts/container-image` in the background before the linters, so the build
(a Debian base with mmdebstrap, then `podman build`, about a minute) overlaps the rest of the
suite; it names the tags and a folder in ORCH_TEST_IMAGE, ORCH_TEST_BASE_IMAGE and
ORCH_TEST_IMAGE_BUILD (`log`, and `rc` when done), and removes the images itself. Run alone
(`pytest tests/container`), the fixture builds under tags unique to the run and removes them.
The container tests run last (see pytest_collection_modifyitems) so that the build is done by then.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.podman import Podman, podman

BUILD_TIMEOUT_S = 900.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("container") is not None)


def _missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]


def _wait_for_background_build(build_dir: Path) -> None:
    rc_file = build_dir / "rc"
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    while not rc_file.exists() or not rc_file.read_text().strip():
        if time.monotonic() > deadline:
            pytest.fail(f"the image build started by scripts/test did not finish in {BUILD_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    if rc_file.read_text().strip() != "0":
        log = (build_dir / "log").read_text()[-4000:]
        pytest.fail(f"scripts/container-image failed:\n{log}")


@pytest.fixture(scope="session")
def image(repo_root: Path) -> Iterator[str]:
    """The tag of the orchestrator image built from the repository's Dockerfile."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (scripts/test installs them with apt as root)")
    build_dir = os.environ.get("ORCH_TEST_IMAGE_BUILD")
    if build_dir:
        _wait_for_background_build(Path(build_dir))
        yield os.environ["ORCH_TEST_IMAGE"]
        return
    run_id = uuid.uuid4().hex[:8]
    base, tag = f"localhost/orch-test-base:{run_id}", f"localhost/orch-test:{run_id}"
    try:
        build = subprocess.run(
            [str(repo_root / "scripts" / "container-image"), base, tag],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
        if build.returncode != 0:
            pytest.fail(f"scripts/container-image failed:\n{build.stderr[-4000:]}")
        yield tag
    finally:
        podman("rmi", "--force", tag, base, check=False)


@pytest.fixture
def pods(image: str) -> Iterator[Podman]:
    """Containers and volumes for one test, removed when it ends."""
    runner = Podman(image)
    try:
        yield runner
    finally:
        runner.cleanup()
