"""The spool: received instances as files, written atomically, at paths built from UIDs only.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file is
written under ``.tmp/``, fsynced, renamed into place, and its folder fsynced, so after a crash
a file at its final name is always whole. Leftovers in ``.tmp/`` are removed at start-up; a
whole file that must not stay in the spool (a second copy of a recorded instance, an unreadable
one) is moved to ``.quarantine/`` under the same relative path, never deleted.

One SOP Instance UID is stored by one thread at a time (:meth:`Spool.instance_lock`), so the
"is it recorded? write, rename, record" sequence of two concurrent stores of the same instance
cannot interleave and leave a file that its row does not describe.

The receiver writes an instance while it arrives (:class:`SpoolFile`), so it is never held
whole in memory. (Starting the disk's writeback while the data arrives, with sync_file_range
from a thread or inline, made ingest slower on this project's VM, not faster: its virtual disk
writes at the fsync, whatever was asked before.)
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.errors import NodeError
from node.uids import is_valid_uid

TMP = ".tmp"
QUARANTINE = ".quarantine"
LOCK_STRIPES = 1024  # per-UID locks: a fixed table, so memory does not grow with the UIDs seen


class SpoolFile:
    """One instance being written under ``.tmp/``: :meth:`commit` makes it durable at its final
    name, :meth:`discard` removes it. Either must be called."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._tmp = spool.tmp / f"{uuid.uuid4().hex}.part"
        self._fd: int | None = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        self.size = 0

    @property
    def path(self) -> Path:
        """The temporary file (under ``.tmp/``) while it is being written."""
        return self._tmp

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None, "the file is closed"
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self.size += written

    def map(self) -> mmap.mmap | None:
        """What was written, read-only in memory (page cache, not the heap), to check it
        without reading it back; None while the file is empty."""
        assert self._fd is not None, "the file is closed"
        if not self.size:
            return None
        return mmap.mmap(self._fd, self.size, access=mmap.ACCESS_READ)

    def commit(self, relative: str) -> int:
        """fsync, rename to ``relative``, fsync its folder; returns the size."""
        assert self._fd is not None, "the file is closed"
        target = self._spool.root / relative
        try:
            if self._spool.fsync:
                os.fdatasync(self._fd)
        except BaseException:
            self.discard()
            raise
        os.close(self._fd)
        self._fd = None
        folder = target.parent
        try:
            if not folder.is_dir():
                self._spool._make_folder(folder)
            os.replace(self._tmp, target)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        if self._spool.fsync:
            _fsync_dir(folder)
        return self.size

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._tmp.unlink(missing_ok=True)


class InvalidUIDError(NodeError, ValueError):
    """A UID that must not become part of a path; the message names the attribute."""


class Spool:
    def __init__(self, root: str | Path, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.tmp = self.root / TMP
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    @contextmanager
    def instance_lock(self, sop_instance_uid: str) -> Iterator[None]:
        """Hold the lock of one SOP Instance UID (a stripe shared with 1/LOCK_STRIPES of the
        others) while its file and its row are made to agree. In this process only: receivers
        in several processes over one spool would need the job store to arbitrate."""
        with self._locks[hash(sop_instance_uid) % LOCK_STRIPES]:
            yield

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

    def open(self) -> SpoolFile:
        """A new temporary file for one instance, written while it arrives."""
        return SpoolFile(self)

    def write(self, relative: str, *parts: bytes | memoryview) -> int:
        """Write ``parts`` one after the other, durably, to ``relative``; returns the size."""
        file = self.open()
        try:
            for part in parts:
                file.write(part)
        except BaseException:
            file.discard()
            raise
        return file.commit(relative)

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
            if study.name.startswith(".") or not study.is_dir():  # .tmp, .quarantine
                continue
            for series in os.scandir(study.path):
                if not series.is_dir():
                    continue
                for entry in os.scandir(series.path):
                    if entry.name.endswith(".dcm"):
                        yield f"{study.name}/{series.name}/{entry.name}"

    def quarantine(self, relative: str) -> str:
        """Move a spool file to ``.quarantine/<relative>`` (a free name if that one is taken);
        returns its new spool-relative path. A rename: nothing is copied or lost."""
        target = self.root / QUARANTINE / relative
        n = 0
        while target.exists():
            n += 1
            target = self.root / QUARANTINE / f"{relative}.{n}"
        self._make_folder(target.parent)
        os.replace(self.root / relative, target)
        if self.fsync:
            _fsync_dir(target.parent)
            _fsync_dir((self.root / relative).parent)
        return str(target.relative_to(self.root))


def dataset_offset(head: bytes) -> int:
    """Where the dataset starts in a Part 10 file whose first 144 bytes are ``head``: after
    the preamble, "DICM" and the File Meta group, whose length (0002,0000) says how long."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a Part 10 file with a File Meta group length")
    return 144 + int(struct.unpack_from("<L", head, 140)[0])


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
