"""Where things are: the repository, DCMTK's tools, a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
