"""Load: 8 associations at once, each sending its own 300-slice 512 x 512 CT study, with fsync
on, while C-ECHOs keep coming. Every instance must be stored, in the job store and the spool."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support.peers import echoscu, peak_rss_mb, storescu

from node.synthetic import SeriesGeometry, write_series

STUDIES = 8
SLICES = 300
MAX_RSS_MB = 1024
_PREFIX = b"1.2.826.0.1.3680043.8.498."  # pydicom's generate_uid() root


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[list[Path]]:
    """One series written once, copied per study with every generated UID changed (same
    length, so the bytes stay valid): each association sends its own study."""
    root = tmp_path_factory.mktemp("load")
    base = write_series(root / "base", SeriesGeometry(rows=512, columns=512, slices=SLICES))
    out = []
    for n in range(STUDIES):
        folder = root / f"study{n}"
        folder.mkdir()
        root_n = b"1.2.826.0.1.3680043.8.49%d." % n  # 490 .. 497: never 498
        files = []
        for path in base:
            data = path.read_bytes()
            assert _PREFIX in data
            (folder / path.name).write_bytes(data.replace(_PREFIX, root_n))
            files.append(folder / path.name)
        out.append(files)
    return out


def test_eight_associations_of_300_slices_with_echoes(node_factory, studies) -> None:
    node = node_factory({"storage": {"fsync": True}, "node": {"log_level": "INFO"}})
    results: list = [None] * STUDIES
    echoes: list[tuple[int, float]] = []
    done = threading.Event()

    def send(n: int) -> None:
        results[n] = storescu(node.port, studies[n])

    def echo_loop() -> None:
        while not done.is_set():
            t = time.monotonic()
            rc = echoscu(node.port).returncode
            echoes.append((rc, time.monotonic() - t))
            done.wait(0.2)

    senders = [threading.Thread(target=send, args=(n,)) for n in range(STUDIES)]
    echo = threading.Thread(target=echo_loop)
    start = time.monotonic()
    echo.start()
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=600)
    elapsed = time.monotonic() - start
    done.set()
    echo.join(timeout=30)

    for n, result in enumerate(results):
        assert result is not None and result.returncode == 0, f"study {n}: {result}"
    total = STUDIES * SLICES
    assert node.store().count_instances() == total
    spool = node.data_dir / "spool"
    # every file but the hidden ones (.tmp/, .quarantine/, each series' .series-facts.json)
    stored = sum(1 for p in spool.rglob("*") if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(spool).parts))
    assert stored == total
    assert len({p.parent.parent.name for p in spool.glob("*/*/*.dcm")}) == STUDIES
    assert echoes and all(rc == 0 for rc, _ in echoes), echoes
    peak = peak_rss_mb(node)
    size_mb = sum(p.stat().st_size for files in studies for p in files) / 2**20
    print(f"\nload: {STUDIES} associations x {SLICES} slices = {total} instances "
          f"({size_mb:.0f} MB) in {elapsed:.1f} s = {total / elapsed:.0f} instances/s, "
          f"{size_mb / elapsed:.0f} MB/s, fsync on; {len(echoes)} C-ECHOs during the load, "
          f"slowest {max(t for _, t in echoes):.2f} s; node peak RSS {peak:.0f} MB")
    assert peak < MAX_RSS_MB
