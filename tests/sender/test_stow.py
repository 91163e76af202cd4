"""The sender by STOW-RS against a real Orthanc with its DICOMweb plugin."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import pydicom
import pytest
from support.orthanc import Orthanc
from support.sender import make_config, make_objects, queue

from node.sender import Sender
from node.sender.stow import StowTarget, _multipart, parse_response
from node.store import JobStore

USERS = {"radnode": "s3cret"}


@pytest.fixture
def pacs(tmp_path: Path):
    with Orthanc(tmp_path / "orthanc", dicomweb=True, users=USERS) as orthanc:
        yield orthanc


def stow_destination(pacs: Orthanc, name: str = "web", **kw: object) -> dict[str, object]:
    return {"name": name, "kind": "stow", "url": pacs.dicomweb_url, "username": "radnode",
            "password": USERS["radnode"], **kw}


def bad_object(tmp_path: Path, like: str) -> tuple[str, str, str]:
    """An instance without Study Instance UID, which Orthanc refuses."""
    ds = pydicom.dcmread(like)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    del ds.StudyInstanceUID
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    return str(path), str(ds.SOPInstanceUID), str(ds.SOPClassUID)


def test_stow_sends_each_object_once_in_one_request(tmp_path: Path, store: JobStore,
                                                    pacs) -> None:
    objects = make_objects(tmp_path / "obj", 4)
    t0 = time.time()
    queue(store, "web", objects, t0)

    summary = Sender(make_config(tmp_path, [stow_destination(pacs)]), store).run_once(t0)

    assert (summary.sent, summary.failed, summary.connections) == (4, 0, 1)
    uids = sorted(uid for _, uid, _ in objects)
    assert sorted(pacs.received()) == uids
    assert sorted(pacs.sop_instance_uids()) == uids
    assert store.count_outbox() == {"sent": 4}
    # stored byte for byte: Orthanc gives back the very file we sent
    orthanc_id = pacs.instances()[0]
    sent = {uid: Path(p).read_bytes() for p, uid, _ in objects}
    got = urllib.request.Request(f"{pacs.base_url}/instances/{orthanc_id}/file")
    got.add_header("Authorization", StowTarget("", username="radnode",
                                               password="s3cret").headers()["Authorization"])
    with urllib.request.urlopen(got, timeout=10) as response:
        data = response.read()
    assert data in sent.values()


def test_partial_failure_charges_only_the_refused_object(tmp_path: Path, store: JobStore,
                                                         pacs) -> None:
    good = make_objects(tmp_path / "obj", 2)
    bad = bad_object(tmp_path, good[0][0])
    config = make_config(tmp_path, [stow_destination(pacs)], initial_backoff_seconds=1.0)
    t0 = time.time()
    queue(store, "web", [*good, bad], t0)

    summary = Sender(config, store).run_once(t0)

    assert (summary.sent, summary.failed, summary.connections) == (2, 1, 1)
    items = {i.sop_instance_uid: i for i in store.outbox_items()}
    refused = items[bad[1]]
    assert (refused.state, refused.attempts, refused.next_attempt_at) == ("pending", 1, t0 + 1)
    assert "failure reason 0xC000" in refused.last_error  # Orthanc's FailureReason
    assert sorted(pacs.sop_instance_uids()) == sorted(uid for _, uid, _ in good)


def test_stow_destination_down_then_back(tmp_path: Path, store: JobStore, pacs) -> None:
    objects = make_objects(tmp_path / "obj", 3)
    config = make_config(tmp_path, [stow_destination(pacs)], initial_backoff_seconds=1.0)
    sender = Sender(config, store)
    t0 = time.time()
    queue(store, "web", objects, t0)
    pacs.kill()

    down = sender.run_once(t0)
    assert (down.connections, down.held) == (1, 3)
    assert "cannot reach http://127.0.0.1" in down.destination_errors["web"]
    assert {(i.attempts, i.next_attempt_at) for i in store.outbox_items()} == {(0, t0 + 1)}

    pacs.start()
    assert sender.run_once(t0 + 0.5).connections == 0
    assert sender.run_once(t0 + 1).sent == 3
    assert sorted(pacs.received()) == sorted(uid for _, uid, _ in objects)


def test_wrong_password_is_a_destination_failure(tmp_path: Path, store: JobStore, pacs) -> None:
    objects = make_objects(tmp_path / "obj", 2)
    config = make_config(tmp_path, [stow_destination(pacs, password="wrong")])
    t0 = time.time()
    queue(store, "web", objects, t0)

    summary = Sender(config, store).run_once(t0)

    assert summary.destination_errors["web"].endswith("answered HTTP 401")
    assert "wrong" not in summary.destination_errors["web"]
    assert {(i.state, i.attempts) for i in store.outbox_items()} == {("pending", 0)}
    assert pacs.received() == []


def test_xml_response_is_read_like_json(tmp_path: Path, pacs) -> None:
    """Orthanc's own XML answer to a partial failure, parsed by the sender's reader."""
    good = make_objects(tmp_path / "obj", 1)
    bad = bad_object(tmp_path, good[0][0])
    body, content_type = _multipart([Path(good[0][0]).read_bytes(), Path(bad[0]).read_bytes()])
    headers = StowTarget("", username="radnode", password="s3cret").headers()
    answers = {}
    for accept in ("application/dicom+xml", "application/dicom+json"):
        request = urllib.request.Request(
            pacs.dicomweb_url + "/studies", data=body, method="POST",
            headers={**headers, "Accept": accept, "Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answers[accept] = parse_response(response.read(), accept)
        except urllib.error.HTTPError as exc:  # Orthanc says 400 for a partial failure
            answers[accept] = parse_response(exc.read(), accept)
    stored, failed = answers["application/dicom+xml"]
    assert stored == {good[0][1]: ""}
    assert failed == {bad[1]: "failure reason 0xC000 (Cannot Understand)"}
    assert answers["application/dicom+json"] == answers["application/dicom+xml"]


def test_request_headers_carry_the_configured_credentials() -> None:
    assert StowTarget("http://x", token="abc").headers()["Authorization"] == "Bearer abc"
    basic = StowTarget("http://x", username="u", password="p").headers()["Authorization"]
    assert basic == "Basic dTpw"
    assert "Authorization" not in StowTarget("http://x").headers()
    assert str(StowTarget("https://u:p@pacs:8443/dicom-web")) == "https://pacs:8443/dicom-web"
