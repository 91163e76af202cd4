"""Shared fixtures: the real data folder, synthetic series, and DCMTK tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_data_dir() -> Path:
    return Path(os.environ.get("RADNODE_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CT/MR cases and SEG/SR files (../shared/data or $RADNODE_TEST_DATA)."""
    path = _shared_data_dir()
    if not (path / "PROVENANCE.md").is_file():
        pytest.skip(f"real test data not found at {path} (set RADNODE_TEST_DATA)")
    return path


def dcmtk(name: str) -> str:
    """A DCMTK tool by name: /usr/bin first, since pynetdicom installs same-named scripts."""
    for candidate in (f"/usr/bin/{name}", shutil.which(name)):
        if candidate and Path(candidate).is_file():
            with open(candidate, "rb") as f:
                if f.read(2) != b"#!":  # a Python entry-point script, not DCMTK
                    return candidate
    if os.environ.get("CI"):
        pytest.fail(f"DCMTK {name} is not installed; .ci/run installs dcmtk")
    pytest.skip(f"DCMTK {name} is not installed (apt-get install dcmtk)")
    raise AssertionError


@pytest.fixture
def node_factory(tmp_path: Path):
    """Start real node processes; all are stopped at the end of the test."""
    from nodeharness import NodeProcess

    started: list[NodeProcess] = []

    def make(sections=None, routes=None, name="node", start=True) -> NodeProcess:
        node = NodeProcess(tmp_path / name, sections, routes)
        started.append(node)
        return node.start() if start else node

    yield make
    for node in started:
        node.kill()
