"""open_store: the one place that chooses the engine, from the configuration or a path."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import build_config
from node.store import JobStore, SqliteJobStore, open_store, store_path


def test_the_store_of_a_configuration_is_in_its_data_folder(tmp_path: Path) -> None:
    config = build_config({"node": {"data_dir": "data"}}, tmp_path)
    store = open_store(config)
    try:
        assert isinstance(store, JobStore) and isinstance(store, SqliteJobStore)
        assert store.path == store_path(tmp_path / "data") == tmp_path / "data" / "radnode.db"
        assert store.path.is_file()
    finally:
        store.close()


def test_a_reader_never_makes_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "data" / "radnode.db"
    with pytest.raises(FileNotFoundError, match=r"no job store at .*radnode\.db: has the node run"):
        open_store(path, create=False)
    assert not path.exists()
    open_store(path).close()
    open_store(str(path), create=False).close()
