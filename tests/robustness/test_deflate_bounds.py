"""Deflated datasets cannot multiply memory (issue 13): each is inflated once, 1 MB at a time,
into a scratch file; a per-dataset bound (storage.max_inflated_mb) and a bound across
associations (storage.inflate_budget_mb) refuse the rest with one log line; completion routes
from the header the receiver kept, never reading or inflating an instance again."""

from __future__ import annotations

import logging
import threading
import time
import zlib
from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import CTImageStorage
from support import corpus
from support.peers import peak_rss_mb, send_raw, sop_uids, start_node, storescu
from support.tools import free_port

from node.config import build_config
from node.receiver.scp import StorageSCP
from node.receiver.spool import Spool
from node.routing.facts import FACTS_FILE
from node.store import open_store

MB = 1 << 20


def deflated_file(path: Path, inflated_mb: int) -> tuple[Path, str]:
    """A CT instance whose deflated dataset inflates to about ``inflated_mb`` MB (an OB value of
    zeros: a small file, made fast by repeating one fully flushed 1 MB block)."""
    uid = generate_uid()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflater.compress(corpus.identity(uid) + corpus.element(
        0x00091010, b"OB", b"", length=inflated_mb * MB))
    body += deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(b"\0" * MB) + deflater.flush(zlib.Z_FULL_FLUSH)
    body += block * inflated_mb + deflater.flush()
    return corpus.raw_file(path, body, CTImageStorage, uid, DeflatedExplicitVRLittleEndian), uid


def test_over_the_bound_is_refused_while_another_store_succeeds(tmp_path: Path) -> None:
    """100 MB inflated with max_inflated_mb = 64: 0xC000 and one log line naming the setting;
    a normal series on another association at the same time is stored."""
    node = start_node(tmp_path / "node", storage={"max_inflated_mb": 64,
                                                  "inflate_budget_mb": 64})
    try:
        big, uid = deflated_file(tmp_path / "big.dcm", 100)
        small = corpus.series(tmp_path / "small", corpus.SeriesGeometry(rows=32, columns=32,
                                                                         slices=8))
        statuses: list[int] = []
        sender = threading.Thread(target=lambda: statuses.extend(send_raw(node.port, [big])))
        sender.start()
        good = storescu(node.port, small)
        sender.join(60)
        assert statuses == [corpus.CANNOT_UNDERSTAND]
        assert good.returncode == 0, good.stderr
        assert node.wait_for(lambda: node.store().count_instances() == len(small))
        lines = [line for line in node.log().splitlines() if uid in line]
        assert len(lines) == 1, lines
        assert "inflates to more than 64 MB (storage.max_inflated_mb)" in lines[0]
        assert not any((node.data_dir / "spool" / ".tmp").iterdir())  # scratch removed
    finally:
        node.kill()


def test_inflating_and_completing_costs_no_memory(tmp_path: Path) -> None:
    """A deflated instance of 160 MB inflated is stored, and its series completed, with the
    node's peak RSS (VmHWM) up by less than 48 MB (it was up ~2x the inflated size before)."""
    node = start_node(tmp_path / "node")
    try:
        path, uid = deflated_file(tmp_path / "big.dcm", 160)
        time.sleep(0.5)
        before = peak_rss_mb(node)
        assert send_raw(node.port, [path]) == [corpus.SUCCESS]
        stored = node.store().instance(uid)
        assert stored is not None and stored.transfer_syntax == DeflatedExplicitVRLittleEndian
        node.wait_for(lambda: f"series {stored.series_uid} complete" in node.log())
        after = peak_rss_mb(node)
        print(f"peak RSS {before:.0f} MB -> {after:.0f} MB for 160 MB inflated")
        assert after - before < 48, (before, after)
        assert "no kept header" not in node.log()
    finally:
        node.kill()


def test_completion_routes_deflated_series_from_the_kept_header(tmp_path: Path) -> None:
    """storescu -xd sends a 24-slice CT series deflated; completion routes it to lung_ct from
    the header kept at receive time, without reading an instance."""
    node = start_node(tmp_path / "node")
    try:
        files = corpus.series(tmp_path / "ct")
        sent = storescu(node.port, files, "-xd")
        assert sent.returncode == 0, sent.stderr
        store = node.store()
        rows = [store.instance(uid) for uid in sop_uids(files)]
        assert all(r is not None and r.transfer_syntax == DeflatedExplicitVRLittleEndian
                   for r in rows)
        series_uid = rows[0].series_uid  # type: ignore[union-attr]
        node.wait_for(lambda: store.jobs(series_uid=series_uid))
        assert (node.data_dir / "spool" / rows[0].path).parent.joinpath(  # type: ignore[union-attr]
            FACTS_FILE).is_file()
        assert f"series {series_uid} complete with 24 instances" in node.log()
        assert "jobs: lung_ct" in node.log()
        assert "no kept header" not in node.log()
    finally:
        node.kill()


def test_budget_across_associations_refuses_with_out_of_resources(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """While other associations hold the inflate budget, a deflated store gets 0xA700 (with one
    log line naming storage.inflate_budget_mb); once it is given back, the same store succeeds.
    The listener runs in this process, so the test can hold the budget itself."""
    config = build_config({
        "node": {"port": free_port()},
        "storage": {"min_free_mb": 0, "fsync": False, "max_inflated_mb": 16,
                    "inflate_budget_mb": 32},
    }, tmp_path)
    store = open_store(tmp_path / "radnode.db")
    scp = StorageSCP(config, store, Spool(tmp_path / "spool", fsync=False))
    scp.start()
    try:
        path, uid = deflated_file(tmp_path / "d.dcm", 8)
        held = scp.inflate_budget.limit - 4 * MB  # as if other associations were inflating
        assert scp.inflate_budget.take(held)
        with caplog.at_level(logging.INFO, logger="radnode.receiver"):
            assert send_raw(scp.port, [path]) == [corpus.OUT_OF_RESOURCES]
        assert scp.inflate_budget.used == held  # what this store took is given back
        refusals = [r.getMessage() for r in caplog.records if uid in r.getMessage()]
        assert len(refusals) == 1 and "storage.inflate_budget_mb" in refusals[0], refusals
        scp.inflate_budget.give(held)
        assert send_raw(scp.port, [path]) == [corpus.SUCCESS]
        assert store.instance(uid) is not None
        assert scp.inflate_budget.used == 0
    finally:
        scp.stop()
        store.close()


def test_inflate_stream_ends(tmp_path: Path) -> None:
    """A pad byte after the stream (PS3.5 A.5) is ignored; a truncated stream is an error; the
    scratch file goes and the budget is given back either way."""
    from node.receiver.inflate import InflateBudget, inflated

    spool, budget = Spool(tmp_path / "spool", fsync=False), InflateBudget(64 * MB)
    payload = bytes(range(256)) * 40000  # ~10 MB, several pieces
    stream = zlib.compress(payload, 6)[2:-4]  # raw deflate
    source = tmp_path / "s"
    source.write_bytes(b"HEAD" + stream + b"\0")
    with inflated(spool, source, 4, b"H", 16 * MB, budget) as scratch:
        assert scratch.path.read_bytes() == b"H" + payload
        assert budget.used == len(payload)
    assert budget.used == 0 and not any(spool.tmp.iterdir())
    source.write_bytes(b"HEAD" + stream[: len(stream) // 2])
    with pytest.raises(zlib.error, match="truncated"), \
            inflated(spool, source, 4, b"H", 16 * MB, budget):
        pass
    assert budget.used == 0 and not any(spool.tmp.iterdir())
