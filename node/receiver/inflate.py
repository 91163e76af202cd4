"""Deflated datasets (Deflated Explicit VR Little Endian) inflated once, streaming, to disk.

A few MB of deflate can claim gigabytes, and a legitimate deflated object is rare and small
(structured reports, key objects). So a deflated dataset is inflated once, in 1 MB pieces read
from its spool file, into a scratch file under the spool's temporary folder (which start-up
clears): memory stays at about 2 MB per association whatever the stream claims. Two bounds,
both settings: ``storage.max_inflated_mb`` per dataset (above it the dataset is refused with
0xC000, for good: sending it again cannot help) and ``storage.inflate_budget_mb`` for the
scratch bytes of all associations together (above it 0xA700, out of resources: it may succeed
later). The spool's free-space floor is checked as the scratch file grows.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from node.errors import NodeError
from node.receiver import status
from node.receiver.spool import Spool, SpoolFile

_READ = 1 << 20  # deflated bytes read at a time
_PIECE = 1 << 20  # most inflated bytes produced (and held) at a time
_DISK_CHECK = 64 << 20  # the free-space floor is checked after each this many inflated bytes


class InflateLimitError(NodeError):
    """A deflated dataset the receiver will not inflate; ``status`` is the C-STORE answer and
    the message names the limit (and the setting), never a value of the dataset."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class InflateBudget:
    """Inflated bytes held in scratch files by all associations at once, bounded: each
    association takes as it inflates and gives back when its scratch file is gone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (and nothing reserved) when that would pass the limit."""
        with self._lock:
            if self._used + size > self.limit:
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._used -= size


@contextmanager
def inflated(
    spool: Spool, source: Path, offset: int, head: bytes, max_bytes: int,
    budget: InflateBudget, low_on_disk: Callable[[], bool] = lambda: False,
) -> Iterator[SpoolFile]:
    """A scratch spool file holding ``head`` then the inflated raw deflate stream found in
    ``source`` from ``offset``; removed (and its budget given back) on leaving the block.

    Raises :class:`InflateLimitError` at a bound and ``zlib.error`` for a corrupt or truncated
    stream. Bytes after the end of the stream (PS3.5 A.5 allows a pad byte) are ignored.
    """
    scratch = spool.open()
    taken = 0
    try:
        scratch.write(head)
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        size, checked = 0, 0
        with source.open("rb") as f:
            f.seek(offset)
            pending = b""
            exhausted = False
            while not inflater.eof:
                if not pending and not exhausted:
                    pending = f.read(_READ)
                    exhausted = not pending
                piece = inflater.decompress(pending, _PIECE)
                pending = inflater.unconsumed_tail
                if not piece:
                    if exhausted and not pending:
                        break  # no input left and nothing more comes out
                    continue
                size += len(piece)
                if size > max_bytes:
                    raise InflateLimitError(
                        f"deflated dataset inflates to more than {max_bytes >> 20} MB "
                        "(storage.max_inflated_mb)", status.CANNOT_UNDERSTAND)
                if not budget.take(len(piece)):
                    raise InflateLimitError(
                        f"deflated datasets being inflated at once would pass "
                        f"{budget.limit >> 20} MB (storage.inflate_budget_mb)",
                        status.OUT_OF_RESOURCES)
                taken += len(piece)
                scratch.write(piece)
                if size - checked >= _DISK_CHECK:
                    checked = size
                    if low_on_disk():
                        raise InflateLimitError(
                            "spool free space fell below storage.min_free_mb while inflating",
                            status.OUT_OF_RESOURCES)
        if not inflater.eof:
            raise zlib.error("Error -5 while decompressing data: incomplete or truncated stream")
        yield scratch
    finally:
        scratch.discard()
        budget.give(taken)
