"""The spool: received instances as files, written atomically, at paths built from UIDs only.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file is
written under ``.tmp/``, fsynced, renamed into place, and its folder fsynced, so after a crash
a file at its final name is always whole. Leftovers in ``.tmp/`` are removed at start-up.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from node.uids import is_valid_uid

TMP = ".tmp"


class InvalidUIDError(ValueError):
    """A UID that must not become part of a path; the message names the attribute."""


class Spool:
    def __init__(self, root: str | Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.tmp = self.root / TMP
        self.tmp.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def relative_path(study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        for name, value in (
            ("StudyInstanceUID", study_uid),
            ("SeriesInstanceUID", series_uid),
            ("SOPInstanceUID", sop_instance_uid),
        ):
            if not is_valid_uid(value):
                reason = "empty" if not value else "not a valid UID"
                raise InvalidUIDError(f"{name} is {reason}")
        return f"{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def write(self, relative: str, *parts: bytes | memoryview) -> int:
        """Write ``parts`` one after the other, durably, to ``relative``; returns the size."""
        target = self.root / relative
        folder = target.parent
        if not folder.is_dir():
            self._make_folder(folder)
        tmp = self.tmp / f"{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            size = sum(len(p) for p in parts)
            views = [memoryview(p) for p in parts]
            while views:
                written = os.writev(fd, views)
                while views and written >= len(views[0]):
                    written -= len(views[0])
                    views.pop(0)
                if views:
                    views[0] = views[0][written:]
            if self.fsync:
                os.fdatasync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, target)
        if self.fsync:
            _fsync_dir(folder)
        return size

    def _make_folder(self, folder: Path) -> None:
        missing = []
        p = folder
        while not p.exists():
            missing.append(p)
            p = p.parent
        folder.mkdir(parents=True, exist_ok=True)
        if self.fsync:
            for created in missing:
                _fsync_dir(created.parent)

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def clean_temporary(self) -> int:
        """Remove half-written files left by a crash; returns how many."""
        removed = 0
        for leftover in self.tmp.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        return removed

    def files(self) -> Iterator[str]:
        """Spool-relative paths of every stored instance file."""
        for study in os.scandir(self.root):
            if study.name == TMP or not study.is_dir():
                continue
            for series in os.scandir(study.path):
                if not series.is_dir():
                    continue
                for entry in os.scandir(series.path):
                    if entry.name.endswith(".dcm"):
                        yield f"{study.name}/{series.name}/{entry.name}"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
