"""The sender by C-STORE against a real Orthanc and real DCMTK storescp peers: delivery exactly
once, back-off while the PACS is down, dead letters, rejected associations, failure statuses,
'caller' destinations, TLS, and restarts. Time is passed to run_once, so back-off schedules are
checked without sleeping; the network is real."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from support.orthanc import Orthanc
from support.sender import job_from, make_config, make_objects, queue
from support.tools import free_port

from node.sender import Sender, outbox_rows
from node.store import JobStore, NewOutboxItem, OutboxState, open_store


def dicom_destination(pacs: Orthanc, name: str = "pacs", **kw: object) -> dict[str, object]:
    return {"name": name, "kind": "dicom", "ae_title": pacs.aet, "host": "127.0.0.1",
            "port": pacs.dicom_port, **kw}


def by_uid(store: JobStore) -> dict[str, object]:
    return {i.sop_instance_uid: i for i in store.outbox_items()}


@pytest.fixture
def pacs(tmp_path: Path):
    with Orthanc(tmp_path / "orthanc") as orthanc:
        yield orthanc


def test_objects_arrive_once_over_one_association(tmp_path: Path, store: JobStore, pacs) -> None:
    objects = make_objects(tmp_path / "obj", 5)
    config = make_config(tmp_path, [dicom_destination(pacs)])
    t0 = time.time()
    queue(store, "pacs", objects, t0)

    summary = Sender(config, store).run_once(t0)

    assert (summary.sent, summary.failed, summary.dead, summary.connections) == (5, 0, 0, 1)
    uids = sorted(uid for _, uid, _ in objects)
    assert sorted(pacs.received()) == uids  # each exactly once
    assert sorted(pacs.sop_instance_uids()) == uids
    tags = pacs.instance_tags(pacs.instances()[0])
    assert tags["SOPInstanceUID"] in uids
    assert store.count_outbox() == {"sent": 5}
    assert all(i.attempts == 1 and i.sent_at == t0 for i in store.outbox_items())
    # nothing left to do, and a re-queue of sent objects does not send them again
    queue(store, "pacs", objects, t0 + 1)
    assert Sender(config, store).run_once(t0 + 2).connections == 0
    assert len(pacs.received()) == 5


def test_background_thread_sends_and_stops(tmp_path: Path, store: JobStore, pacs) -> None:
    objects = make_objects(tmp_path / "obj", 3)
    sender = Sender(make_config(tmp_path, [dicom_destination(pacs)]), store, poll_seconds=30)
    sender.start()
    try:
        queue(store, "pacs", objects, time.time())
        sender.wake()  # without this the thread would sleep for poll_seconds
        deadline = time.monotonic() + 15
        while store.count_outbox().get("sent") != 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.count_outbox() == {"sent": 3}
    finally:
        started = time.monotonic()
        sender.stop(timeout=10)
        assert time.monotonic() - started < 2
    assert sorted(pacs.received()) == sorted(uid for _, uid, _ in objects)


def test_pacs_down_backs_off_then_receives_everything(tmp_path: Path, store: JobStore,
                                                      pacs) -> None:
    objects = make_objects(tmp_path / "obj", 4)
    config = make_config(tmp_path, [dicom_destination(pacs)], initial_backoff_seconds=1.0,
                         max_backoff_seconds=4.0, max_attempts=5)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "pacs", objects, t0)
    pacs.kill()

    first = sender.run_once(t0)
    assert (first.connections, first.sent, first.failed, first.held) == (1, 0, 0, 4)
    assert "cannot connect" in first.destination_errors["pacs"]
    items = store.outbox_items()
    assert {(i.state, i.attempts, i.next_attempt_at) for i in items} == {("pending", 0, t0 + 1)}
    assert "try 1 of 5" in (items[0].last_error or "")

    assert sender.run_once(t0 + 0.5).connections == 0  # not due yet: no new association
    assert sender.run_once(t0 + 1).connections == 1  # second try fails: waits 2 s now
    assert {i.next_attempt_at for i in store.outbox_items()} == {t0 + 3}
    pacs.start()
    assert sender.run_once(t0 + 2.9).connections == 0
    last = sender.run_once(t0 + 3)
    assert (last.connections, last.sent) == (1, 4)
    assert sorted(pacs.received()) == sorted(uid for _, uid, _ in objects)
    # the destination's failures were not charged to the objects
    assert {(i.state, i.attempts) for i in store.outbox_items()} == {("sent", 1)}
    assert sender.destination_states() == {}


def test_pacs_that_stays_down_gives_dead_letters_and_retry_brings_them_back(
        tmp_path: Path, store: JobStore) -> None:
    later = Orthanc(tmp_path / "later")  # ports reserved, not started yet: nobody listens
    objects = make_objects(tmp_path / "obj", 3)
    config = make_config(tmp_path, [dicom_destination(later)], initial_backoff_seconds=1.0,
                         max_backoff_seconds=4.0, max_attempts=3)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "pacs", objects, t0)

    tries = [sender.run_once(t0 + dt) for dt in (0, 0.5, 1, 2, 3)]

    assert [s.connections for s in tries] == [1, 0, 1, 0, 1]
    assert tries[-1].dead == 3
    dead = store.outbox_items(OutboxState.DEAD)
    assert len(dead) == 3
    assert all("failed 3 tries in a row" in (i.last_error or "") for i in dead)
    assert all("cannot connect to ORTHANC@127.0.0.1" in (i.last_error or "") for i in dead)
    assert sender.run_once(t0 + 100).connections == 0  # dead letters are left alone

    with later:
        assert store.retry_dead(now=t0 + 101) == 3
        summary = sender.run_once(t0 + 101)
        assert (summary.sent, summary.connections) == (3, 1)
        assert sorted(later.received()) == sorted(uid for _, uid, _ in objects)


def test_rejecting_pacs_is_not_hammered(tmp_path: Path, store: JobStore, pacs) -> None:
    objects = make_objects(tmp_path / "obj", 6)
    config = make_config(tmp_path, [dicom_destination(pacs, ae_title="NOT-ORTHANC")],
                         initial_backoff_seconds=1.0, max_backoff_seconds=4.0, max_attempts=50)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "pacs", objects[:3], t0)

    connections = []
    for k in range(61):  # a round every 0.25 s for 15 s of (simulated) time
        if k == 9:  # more results arrive while the PACS rejects us: no extra association
            queue(store, "pacs", objects[3:], t0 + k * 0.25)
        summary = sender.run_once(t0 + k * 0.25)
        connections += [k * 0.25] * summary.connections

    assert connections == [0, 1, 3, 7, 11, 15]  # back-off 1, 2, 4, then capped at 4
    assert pacs.log_count("Rejected association") == 6  # counted by the PACS itself
    items = store.outbox_items()
    assert {(i.state, i.attempts) for i in items} == {("pending", 0)}
    assert all("association rejected" in (i.last_error or "") for i in items)
    assert pacs.received() == []


def test_a_peer_that_rejects_and_closes_at_once_is_reported_as_rejecting(
        tmp_path: Path, store: JobStore) -> None:
    # A-ASSOCIATE-RJ the moment the connection opens, then close (Orthanc is nearly as quick):
    # pynetdicom alone calls about 1 in 4 of these an abort (it sees the closed socket before
    # it hands on the rejection), so sixty rounds all but certainly show a regression.
    server = socket.create_server(("127.0.0.1", 0))
    rejected = []

    def reject_each() -> None:
        with server:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:  # the listener was closed: the test is over
                    return
                with conn:
                    conn.sendall(bytes((0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7)))  # called AE unknown
                    conn.settimeout(2)
                    rejected.append(conn.recv(1)[:1] == b"\x01")  # then its A-ASSOCIATE-RQ

    peer = threading.Thread(target=reject_each, daemon=True)
    peer.start()
    destination = {"name": "pacs", "kind": "dicom", "ae_title": "PACS", "host": "127.0.0.1",
                   "port": server.getsockname()[1]}
    config = make_config(tmp_path, [destination], initial_backoff_seconds=1.0,
                         max_backoff_seconds=1.0, max_attempts=100)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "pacs", make_objects(tmp_path / "obj", 1), t0)

    errors = []
    try:
        for k in range(60):
            assert sender.run_once(t0 + k).connections == 1
            errors.append(store.outbox_items()[0].last_error)
    finally:
        server.close()

    assert len(rejected) == 60 and all(rejected)
    assert all(e.startswith("association rejected by PACS@127.0.0.1") and
               "Called AE title not recognised" in e for e in errors), set(errors)


def test_failure_status_is_charged_to_that_object_only(tmp_path: Path, store: JobStore,
                                                       pacs) -> None:
    good = make_objects(tmp_path / "obj", 3)
    bad_path = tmp_path / "bad.dcm"  # Orthanc answers 0xA700 to an instance without a study
    ds = pydicom.dcmread(good[0][0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    del ds.StudyInstanceUID
    ds.save_as(bad_path)
    bad = (str(bad_path), str(ds.SOPInstanceUID), str(ds.SOPClassUID))
    missing = (str(tmp_path / "gone.dcm"), pydicom.uid.generate_uid(), bad[2])
    config = make_config(tmp_path, [dicom_destination(pacs)], initial_backoff_seconds=1.0,
                         max_attempts=2)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "pacs", [*good, bad, missing], t0)

    first = sender.run_once(t0)

    assert (first.sent, first.failed, first.dead, first.connections) == (3, 1, 1, 1)
    items = by_uid(store)
    assert items[bad[1]].state == "pending" and items[bad[1]].attempts == 1
    assert items[bad[1]].next_attempt_at == t0 + 1
    assert "0xA700" in items[bad[1]].last_error
    assert items[missing[1]].state == "dead"
    assert "does not exist" in items[missing[1]].last_error

    second = sender.run_once(t0 + 1)
    assert (second.sent, second.dead, second.connections) == (0, 1, 1)
    items = by_uid(store)
    assert items[bad[1]].state == "dead" and items[bad[1]].attempts == 2
    assert "0xA700" in items[bad[1]].last_error
    # the good objects went once (the bad one is refused before Orthanc's receipt filter)
    assert sorted(pacs.received()) == sorted(uid for _, uid, _ in good)
    assert sorted(pacs.sop_instance_uids()) == sorted(uid for _, uid, _ in good)


def test_caller_destination_sends_back_to_the_peer(tmp_path: Path, store: JobStore,
                                                   storescp) -> None:
    modality = storescp(aet="MODALITY1")
    objects = make_objects(tmp_path / "obj", 3)
    stray = make_objects(tmp_path / "stray", 1)
    config = make_config(
        tmp_path, [{"name": "back", "kind": "caller"}],
        peers=[{"ae_title": "MODALITY1", "host": "127.0.0.1", "port": modality.port}])
    t0 = time.time()
    queue(store, "back", objects, t0, job_id=job_from(store, "MODALITY1", t0))
    queue(store, "back", stray, t0, job_id=job_from(store, "STRANGER", t0))

    summary = Sender(config, store).run_once(t0)

    assert (summary.sent, summary.dead, summary.connections) == (3, 1, 1)
    assert modality.received() == sorted(uid for _, uid, _ in objects)
    assert modality.associations() == 1
    (dead,) = store.outbox_items(OutboxState.DEAD)
    assert dead.sop_instance_uid == stray[0][1]
    assert "no [[peers]] entry for calling AE 'STRANGER'" in dead.last_error


def test_tls_send_with_client_certificate(tmp_path: Path, store: JobStore, storescp,
                                          certificates) -> None:
    c = certificates
    scp = storescp("+tls", str(c["server_key"]), str(c["server_cert"]), "+cf", str(c["ca"]),
                   "-rc", aet="SECURE")
    objects = make_objects(tmp_path / "obj", 2)
    common = {"kind": "dicom", "ae_title": "SECURE", "host": "127.0.0.1", "port": scp.port,
              "tls": True, "tls_certificate": str(c["client_cert"]),
              "tls_private_key": str(c["client_key"])}
    config = make_config(tmp_path, [
        {"name": "secure", **common, "tls_ca_certificates": str(c["ca"])},
        {"name": "untrusted", **common, "tls_ca_certificates": str(c["other_ca"])},
    ])
    t0 = time.time()
    queue(store, "secure", objects, t0)
    queue(store, "untrusted", objects, t0)

    summary = Sender(config, store).run_once(t0)

    assert summary.sent == 2 and summary.connections == 2
    assert scp.received() == sorted(uid for _, uid, _ in objects)
    assert "TLS" in summary.destination_errors["untrusted"]
    untrusted = [i for i in store.outbox_items() if i.destination == "untrusted"]
    assert {(i.state, i.attempts) for i in untrusted} == {("pending", 0)}


def test_restart_resumes_from_the_store(tmp_path: Path, pacs) -> None:
    objects = make_objects(tmp_path / "obj", 5)
    config = make_config(tmp_path, [dicom_destination(pacs)], initial_backoff_seconds=2.0)
    db = tmp_path / "data" / "radnode.db"
    t0 = time.time()

    store = open_store(db)
    queue(store, "pacs", objects, t0)
    assert Sender(config, store, batch_size=2).run_once(t0).sent == 2
    pacs.kill()
    assert Sender(config, store, batch_size=2).run_once(t0 + 1).destination_errors
    store.close()  # the node stops here

    store = open_store(db)
    sender = Sender(config, store, batch_size=2)
    assert sender.run_once(t0 + 2).connections == 0  # postponed until t0 + 3 (on disk)
    pacs.start()
    sent = [sender.run_once(t0 + dt).sent for dt in (3, 3.1)]
    store.close()

    assert sent == [2, 1]
    assert sorted(pacs.received()) == sorted(uid for _, uid, _ in objects)
    store = open_store(db)
    assert store.count_outbox() == {"sent": 5}
    store.close()


def test_unconfigured_destination_is_a_dead_letter(tmp_path: Path, store: JobStore) -> None:
    objects = make_objects(tmp_path / "obj", 1)
    queue(store, "gone", objects, 0.0)
    port = free_port()
    config = make_config(tmp_path, [{"name": "pacs", "kind": "dicom", "ae_title": "X",
                                     "host": "127.0.0.1", "port": port}])
    summary = Sender(config, store).run_once(1.0)
    assert (summary.dead, summary.connections) == (1, 0)
    (item,) = store.outbox_items()
    assert item.state == "dead" and "'gone' is not configured" in item.last_error


LABEL_MAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"


def relabel(source: str, path: Path, sop_class: str | None = None,
            compress: str | None = None) -> tuple[str, str, str]:
    """A copy of ``source`` as another SOP class and/or compressed (a new SOP instance)."""
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    if sop_class:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    if compress:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return str(path), str(ds.SOPInstanceUID), str(ds.SOPClassUID)


def test_files_go_as_stored_in_their_own_syntax_and_class(tmp_path: Path,
                                                          store: JobStore) -> None:
    (ct,) = make_objects(tmp_path / "obj", 1)
    rle = relabel(ct[0], tmp_path / "rle.dcm", compress=pydicom.uid.RLELossless)
    labelmap = relabel(ct[0], tmp_path / "labelmap.dcm", sop_class=LABEL_MAP_SEG,
                       compress=pydicom.uid.RLELossless)
    t0 = time.time()
    # an Orthanc that takes SOP classes it does not know (Label Map SEG is from 2024)
    with Orthanc(tmp_path / "open", extra={"UnknownSopClassAccepted": True}) as pacs:
        config = make_config(tmp_path, [dicom_destination(pacs)])
        queue(store, "pacs", [ct, rle, labelmap], t0)
        summary = Sender(config, store).run_once(t0)
        assert (summary.sent, summary.connections) == (3, 1)
        syntaxes = {pacs.instance_tags(i)["SOPInstanceUID"]:
                    pacs.get(f"/instances/{i}/metadata/TransferSyntax")
                    for i in pacs.instances()}
        assert syntaxes == {ct[1]: pydicom.uid.ExplicitVRLittleEndian,
                            rle[1]: pydicom.uid.RLELossless,
                            labelmap[1]: pydicom.uid.RLELossless}


def test_sop_class_the_pacs_refuses_is_charged_to_the_object(tmp_path: Path, store: JobStore,
                                                             pacs) -> None:
    (ct,) = make_objects(tmp_path / "obj", 1)
    labelmap = relabel(ct[0], tmp_path / "labelmap.dcm", sop_class=LABEL_MAP_SEG)
    config = make_config(tmp_path, [dicom_destination(pacs)])
    t0 = time.time()
    queue(store, "pacs", [labelmap], t0)

    summary = Sender(config, store).run_once(t0)

    assert (summary.failed, summary.destination_errors) == (1, {})
    (item,) = store.outbox_items()
    assert item.attempts == 1 and "accepts no presentation context" in item.last_error
    # the CT sent next (same destination, same round later) is not held back by the refusal
    queue(store, "pacs", [ct], t0 + 0.5)
    assert Sender(config, store).run_once(t0 + 0.5).sent == 1


def test_peer_that_aborts_mid_batch(tmp_path: Path, store: JobStore, storescp) -> None:
    """storescp --abort-after drops the association after each C-STORE request, before the
    response: the object in flight is charged, the rest wait for the destination's back-off."""
    scp = storescp("--abort-after", aet="FLAKY")
    objects = make_objects(tmp_path / "obj", 3)
    config = make_config(tmp_path, [{"name": "flaky", "kind": "dicom", "ae_title": "FLAKY",
                                     "host": "127.0.0.1", "port": scp.port}],
                         initial_backoff_seconds=1.0, max_attempts=5)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "flaky", objects, t0)

    summary = sender.run_once(t0)

    assert (summary.sent, summary.failed, summary.held, summary.connections) == (0, 1, 2, 1)
    assert "no response" in summary.destination_errors["flaky"]
    attempts = sorted(i.attempts for i in store.outbox_items())
    assert attempts == [0, 0, 1]
    assert {i.next_attempt_at for i in store.outbox_items()} == {t0 + 1}
    assert sender.run_once(t0 + 0.5).connections == 0


def test_outbox_rows_from_result_files(tmp_path: Path, store: JobStore, pacs) -> None:
    """How the service queues a job's results: rows built from the files, relative paths."""
    data = tmp_path / "data"
    objects = make_objects(data / "results" / "s1", 2)
    rows = outbox_rows(["pacs"], [p for p, _, _ in objects], data)
    assert rows == [NewOutboxItem("pacs", f"results/s1/{Path(p).name}", uid, cls)
                    for p, uid, cls in objects]
    store.enqueue(rows, now=1.0)
    summary = Sender(make_config(tmp_path, [dicom_destination(pacs)]), store).run_once(1.0)
    assert summary.sent == 2
    assert sorted(pacs.received()) == sorted(uid for _, uid, _ in objects)
