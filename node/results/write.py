"""Write a result object so that a reader sees the whole file or none of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from pydicom.dataset import Dataset


class Written(NamedTuple):
    path: Path
    sop_instance_uid: str
    sop_class_uid: str


def write_dataset(ds: Dataset, path: str | Path) -> Written:
    """Write ``ds`` as a DICOM file at ``path``: temporary name, fsync, rename, fsync the folder.

    A crash leaves either the old file, the new one, or a ``.tmp`` file that no reader takes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            ds.save_as(f, enforce_file_format=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return Written(path, str(ds.SOPInstanceUID), str(ds.SOPClassUID))
