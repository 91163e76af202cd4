"""Open the job store the configuration names.

Today there is one engine, SQLite, in ``<node.data_dir>/radnode.db``. A new engine is chosen
here (from its configuration) and nowhere else: the rest of the node sees only the
:class:`node.store.protocol.JobStore` protocol.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from node.store.protocol import JobStore
from node.store.sqlite import SqliteJobStore, store_path

if TYPE_CHECKING:
    from node.config import Config


def open_store(where: Config | str | os.PathLike[str], *, create: bool = True) -> JobStore:
    """The job store of a configuration (its ``node.data_dir``), or the SQLite store at a
    file path. The store is migrated to this release's schema on opening. With ``create``
    false a store that does not exist yet is a FileNotFoundError (a reader never makes an
    empty one)."""
    path = Path(where) if isinstance(where, str | os.PathLike) else store_path(where.data_dir)
    if not create and not path.is_file():
        raise FileNotFoundError(f"no job store at {path}: has the node run with this config?")
    return SqliteJobStore(path)
