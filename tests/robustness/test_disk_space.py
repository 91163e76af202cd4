"""The free-space floor: with a ballast file filling the spool's filesystem below
storage.min_free_mb, new instances get 0xA700; once it is deleted they are stored again.

The spool goes on /dev/shm where there is one: a filesystem of its own, so that other work on
the machine's disk (other test runs) cannot move its free space while the test measures it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pydicom
from support.corpus import SMALL, series
from support.peers import send_raw

MARGIN_MB = 150
BALLAST_MB = 300


def _free_mb(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize // 2**20


def _spool_filesystem(tmp_path: Path) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and _free_mb(shm) > 4 * BALLAST_MB:
        return Path(tempfile.mkdtemp(prefix="radnode-disk-", dir=shm))
    return tmp_path / "var"


def test_floor_refuses_with_A700_then_recovers(node_factory, tmp_path) -> None:
    files = series(tmp_path / "ct", SMALL)
    data_dir = _spool_filesystem(tmp_path)
    try:
        floor = _free_mb(data_dir.parent) - MARGIN_MB
        node = node_factory({"storage": {"min_free_mb": floor},
                             "node": {"log_level": "INFO", "data_dir": str(data_dir)}})
        assert send_raw(node.port, files[:2]) == [0x0000, 0x0000]
        ballast = data_dir / "ballast.bin"  # the spool's own filesystem
        try:
            with open(ballast, "wb") as fh:
                block = b"\0" * 2**20
                for _ in range(BALLAST_MB):
                    fh.write(block)
                fh.flush()
                os.fsync(fh.fileno())
            assert _free_mb(data_dir) < floor, "the ballast did not bring free space below"
            assert send_raw(node.port, files[2:5]) == [0xA700] * 3
            assert "below storage.min_free_mb" in node.log()
        finally:
            ballast.unlink(missing_ok=True)
        assert _free_mb(data_dir) > floor
        assert send_raw(node.port, files[2:5]) == [0x0000] * 3
        store = node.store()
        assert store.count_instances() == 5
        for path in files[:5]:
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            assert store.has_instance(uid)
        print(f"\nfloor {floor} MB on {data_dir.parent}: 3 x 0xA700 with the {BALLAST_MB} MB "
              "ballast, 3 x Success after deleting it")
        node.kill()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
