"""The bad-input corpus against one real node, while a good modality keeps sending.

Each case is its own test: C-STORE-time cases assert the exact DIMSE status and the log line;
job-time cases (valid DICOM that makes no trustworthy volume, or would bomb the decoder) assert
the failed job's reason. No reason or log line may carry the canary patient's name or ID, and the
node's peak memory stays bounded after the bombs.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification
from support import corpus
from support.corpus import JOB_CASES, STORE_CASES, JobCase, StoreCase
from support.peers import (
    NETWORK_TIMEOUT,
    GoodSender,
    c_store_command,
    echoscu,
    open_association,
    pdata,
    peak_rss_mb,
    send_raw,
    sop_uids,
    start_node,
    storescu,
    wait_closed,
)

MAX_RSS_MB = 1536


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def node(work: Path):
    started = start_node(work / "node")
    yield started
    started.kill()


@pytest.fixture(scope="module")
def template(work: Path) -> list[Path]:
    files = corpus.series(work / "template")
    corpus._TEMPLATE[:] = [files[0]]
    return files


@pytest.fixture(scope="module")
def good_sender(node, work: Path):
    """Valid 8-slice CT series (too few slices for lung_ct: no jobs), sent throughout."""
    series = [corpus.series(work / f"good{n}", corpus.SeriesGeometry(
        rows=32, columns=32, slices=8)) for n in range(6)]
    sender = GoodSender(node.port, series).start()
    yield sender
    sender.stop()


@pytest.fixture(scope="module")
def job_series(node, template, good_sender, work: Path) -> dict[str, tuple[str, list[int]]]:
    """Every job case's series, sent at once: case id -> (series UID, C-STORE statuses)."""
    sent = {}
    for case in JOB_CASES:
        files = case.build(work / "jobs" / case.id)
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        sent[case.id] = (uid, send_raw(node.port, files))
    return sent


@pytest.mark.parametrize("case", STORE_CASES, ids=[c.id for c in STORE_CASES])
def test_store_case(case: StoreCase, node, template, good_sender, work: Path) -> None:
    folder = work / "store" / case.id
    folder.mkdir(parents=True)
    path = case.build(folder, template[1])
    request_uid = str(pydicom.filereader.read_file_meta_info(path).MediaStorageSOPInstanceUID)
    assert send_raw(node.port, [path]) == [case.status]
    spool = node.data_dir / "spool"
    if case.status == corpus.SUCCESS:
        assert node.store().has_instance(request_uid)
        assert list(spool.rglob(f"{request_uid}.dcm"))
        return
    assert not node.store().has_instance(request_uid)
    assert not list(spool.rglob(f"{request_uid}.dcm"))
    assert not list(spool.glob("*/*/*evil*")) and not Path("/tmp/radnode-evil").exists()
    refusal = [line for line in node.log().splitlines() if f"refused {request_uid}" in line]
    assert refusal and case.what in refusal[-1], refusal


@pytest.mark.parametrize("case", JOB_CASES, ids=[c.id for c in JOB_CASES])
def test_job_case(case: JobCase, node, job_series) -> None:
    series_uid, statuses = job_series[case.id]
    assert statuses == [corpus.SUCCESS] * corpus.SLICES
    store = node.store()
    job = node.wait_for(lambda: next((j for j in store.jobs() if j.series_uid == series_uid
                                      and j.state in ("done", "failed")), None), timeout=90)
    assert job.state == "failed"
    assert case.reason in job.error, job.error
    for secret in (corpus.CANARY_NAME, corpus.CANARY_ID, "Canary", str(node.data_dir)):
        assert secret not in job.error


@pytest.mark.parametrize("syntax,result", [("1.2.3.4.5.6.7.8", 0x04), ("", None)],
                         ids=["unknown-transfer-syntax", "unknown-plus-known"])
def test_unknown_transfer_syntax_is_refused_at_negotiation(node, syntax, result) -> None:
    ae = AE(ae_title="ODDSYNTAX")
    if result is None:  # a known syntax beside the unknown one: the known one is taken
        ae.add_requested_context(CTImageStorage, ["1.2.3.4.5.6.7.8", "1.2.840.10008.1.2.1"])
    else:
        ae.add_requested_context(CTImageStorage, [syntax])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="RADNODE")
    try:
        assert assoc.is_established
        ct = [cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage]
        if result is None:
            assert [cx.transfer_syntax[0] for cx in ct] == ["1.2.840.10008.1.2.1"]
        else:
            assert ct == []
            rejected = [cx for cx in assoc.rejected_contexts
                        if cx.abstract_syntax == CTImageStorage]
            assert [cx.result for cx in rejected] == [result]  # transfer syntaxes not supported
            assert int(assoc.send_c_echo().Status) == 0  # the association itself still works
    finally:
        assoc.release()


def test_unknown_abstract_syntax_is_refused_at_negotiation(node) -> None:
    ae = AE(ae_title="ODDCLASS")
    ae.add_requested_context("1.2.3.4.5.6.7.9")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="RADNODE")
    try:
        assert [cx.result for cx in assoc.rejected_contexts] == [0x03]  # abstract syntax
    finally:
        if assoc.is_established:
            assoc.release()


def test_http_request_on_the_dicom_port_is_dropped(node) -> None:
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
        start = time.monotonic()
        reply = sock.recv(4096)
        while reply and time.monotonic() - start < 10:
            if not (more := sock.recv(4096)):
                break
            reply += more
        assert time.monotonic() - start < NETWORK_TIMEOUT + 3
    assert echoscu(node.port).returncode == 0


def test_unknown_pdu_type_gets_an_abort(node) -> None:
    assoc, sock, _ = open_association(node.port, CTImageStorage)
    sock.sendall(struct.pack(">BBL", 0x09, 0, 4) + b"\0" * 4)
    assert wait_closed(assoc, NETWORK_TIMEOUT + 5) < NETWORK_TIMEOUT + 5
    assert echoscu(node.port).returncode == 0


def test_pdu_length_claim_of_4GB_is_dropped_after_network_timeout(tmp_path) -> None:
    """A C-STORE whose P-DATA-TF claims ~4 GB, then 8 KB and silence: the receiver streams
    what arrives to the spool's temporary folder (never a buffer of the claimed size), its
    socket timeout (network_timeout) ends the wait, and the partial file is removed. A node of
    its own: the module's node has the good sender's files passing through that folder."""
    node = start_node(tmp_path / "node")
    try:
        _claim_4gb(node)
    finally:
        node.kill()


def _claim_4gb(node) -> None:
    rss_before = peak_rss_mb(node)
    assoc, sock, context = open_association(node.port, CTImageStorage)
    sock.sendall(pdata(context, c_store_command(CTImageStorage, "1.2.3.4.4294967280"),
                       command=True, last=True))
    sock.sendall(pdata(context, b"\0" * 8192, command=False, last=False,
                       claimed_length=0xFFFFFFF0))
    assert echoscu(node.port).returncode == 0  # others are served meanwhile
    dropped = wait_closed(assoc, NETWORK_TIMEOUT + 10)
    assert NETWORK_TIMEOUT * 0.5 < dropped < NETWORK_TIMEOUT + 5, dropped
    assert peak_rss_mb(node) - rss_before < 64
    assert echoscu(node.port).returncode == 0
    assert not list((node.data_dir / "spool" / ".tmp").iterdir())


def test_dataset_fragment_without_a_command_gets_an_abort(node) -> None:
    """A dataset PDV with no C-STORE command before it breaks the protocol: A-ABORT at once."""
    assoc, sock, context = open_association(node.port, CTImageStorage)
    sock.sendall(pdata(context, b"\0" * 8192, command=False, last=True))
    assert wait_closed(assoc, 5) < 2
    assert assoc.is_aborted
    assert echoscu(node.port).returncode == 0


def test_memory_stayed_bounded_and_no_patient_data_in_the_log(node, job_series) -> None:
    store = node.store()
    uids = {uid for uid, _ in job_series.values()}
    node.wait_for(lambda: {j.series_uid for j in store.jobs() if j.state in ("done", "failed")}
                  >= uids, timeout=120)
    peak = peak_rss_mb(node)
    print(f"\nnode peak RSS after {len(STORE_CASES)} store cases and {len(JOB_CASES)} job cases "
          f"(bombs included): {peak:.0f} MB")
    assert peak < MAX_RSS_MB
    log = node.log()
    assert corpus.CANARY_NAME not in log and corpus.CANARY_ID not in log
    assert "MemoryError" not in log


def test_good_sender_kept_working(node, good_sender) -> None:
    """Runs last: the good modality's every send succeeded while the corpus was sent, and one
    more after it; all its instances are stored."""
    good_sender.stop()
    assert len(good_sender.results) >= 3, "the good sender hardly ran"
    failed = [r.stderr[-500:] for r in good_sender.results if r.returncode != 0]
    assert failed == []
    after = storescu(node.port, good_sender.series[0])
    assert after.returncode == 0, after.stderr
    store = node.store()
    for files in good_sender.sent_series():
        for uid in sop_uids(files):
            assert store.has_instance(uid)
    print(f"\ngood sender: {len(good_sender.results)} storescu runs, all succeeded")
