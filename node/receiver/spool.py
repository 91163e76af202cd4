"""The spool: received instances as files, written atomically, at paths built from UIDs only.

Layout: ``<spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``. A file is
written under ``.tmp/``, fsynced, renamed into place, and its folder fsynced, so after a crash
a file at its final name is always whole. Leftovers in ``.tmp/`` are removed at start-up.

The receiver writes an instance while it arrives (:class:`SpoolFile`), and a writeback thread
asks the kernel to start writing each piece to disk at once (Linux's sync_file_range), so the
disk works while the network does and the fsync that precedes Success finds little left to
flush. On this project's VM the disk writes ~400 MB/s, about the speed a 512x512 CT arrives
at over loopback: without the overlap, fsync doubled the time of a C-STORE.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import queue
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from node.uids import is_valid_uid

TMP = ".tmp"


def _start_writeback_function() -> Callable[[int, int, int], object] | None:
    """Linux's sync_file_range(SYNC_FILE_RANGE_WRITE): starts writing a range without waiting."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _start_writeback_function()
_SYNC_FILE_RANGE_WRITE = 2


class _Writeback:
    """One thread that starts writeback of the ranges it is given: sync_file_range returns
    before the data is on disk but can block on the device's queue, so the receiving thread
    does not call it itself."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[SpoolFile, int, int]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, file: SpoolFile, start: int, length: int) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spool-writeback",
                                                daemon=True)
                self._thread.start()
        with file._idle:
            file._pending += 1
        self._queue.put((file, start, length))

    def _run(self) -> None:
        assert _sync_file_range is not None
        while True:
            file, start, length = self._queue.get()
            try:
                if file._fd is not None:
                    _sync_file_range(file._fd, start, length, _SYNC_FILE_RANGE_WRITE)
            finally:
                with file._idle:
                    file._pending -= 1
                    if not file._pending:
                        file._idle.notify_all()


_writeback = _Writeback()


class SpoolFile:
    """One instance being written under ``.tmp/``: :meth:`commit` makes it durable at its final
    name, :meth:`discard` removes it. Either must be called."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._tmp = spool.tmp / f"{uuid.uuid4().hex}.part"
        self._fd: int | None = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        self.size = 0
        self._pending = 0  # ranges handed to the writeback thread, not yet started
        self._idle = threading.Condition()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None, "the file is closed"
        view = memoryview(data)
        start = self.size
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self.size += written
        if self._spool.fsync and _sync_file_range is not None and self.size > start:
            _writeback.submit(self, start, self.size - start)

    def _settle(self) -> None:
        """Wait until the writeback thread is done with this file's descriptor."""
        with self._idle:
            self._idle.wait_for(lambda: not self._pending)

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
        self._settle()
        try:
            if self._spool.fsync:
                os.fdatasync(self._fd)
        except BaseException:
            self.discard()
            raise
        os.close(self._fd)
        self._fd = None
        folder = target.parent
        if not folder.is_dir():
            self._spool._make_folder(folder)
        os.replace(self._tmp, target)
        if self._spool.fsync:
            _fsync_dir(folder)
        return self.size

    def discard(self) -> None:
        if self._fd is not None:
            self._settle()
            os.close(self._fd)
            self._fd = None
            self._tmp.unlink(missing_ok=True)


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
