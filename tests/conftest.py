"""Shared fixtures: the real data folder, synthetic series, and DCMTK tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.tools import REPO


def _shared_data_dir() -> Path:
    return Path(os.environ.get("RADNODE_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CT/MR cases and SEG/SR files (../shared/data or $RADNODE_TEST_DATA)."""
    path = _shared_data_dir()
    if not (path / "PROVENANCE.md").is_file():
        pytest.skip(f"real test data not found at {path} (set RADNODE_TEST_DATA)")
    return path


@pytest.fixture
def node_factory(tmp_path: Path):
    """Start real node processes; all are stopped at the end of the test."""
    from support.node_process import NodeProcess

    started: list[NodeProcess] = []

    def make(sections=None, routes=None, name="node", start=True) -> NodeProcess:
        node = NodeProcess(tmp_path / name, sections, routes)
        started.append(node)
        return node.start() if start else node

    yield make
    for node in started:
        node.kill()
