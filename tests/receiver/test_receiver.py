"""The C-STORE/C-ECHO listener against real DCMTK tools and a real pynetdicom peer."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage
from support.tools import dcmtk

from node.synthetic import SeriesGeometry, write_series

SMALL = SeriesGeometry(rows=512, columns=512, slices=12)


def storescu(
    port: int, files: list[Path], *args: str, aec: str = "RADNODE"
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.run(
        [dcmtk("storescu"), "-v", "-aec", aec, *args, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, env=env, timeout=120,
    )


def scu_statuses(port: int, files: list[Path], calling: str = "PYSCU") -> list[int]:
    """Send files with pynetdicom (raw bytes, UIDs from the file meta); return the statuses."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    ae = AE(ae_title=calling)
    for path in files:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE")
    assert assoc.is_established, "association was not accepted"
    try:
        return [int(assoc.send_c_store(path).Status) for path in files]
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_series(tmp_path_factory.mktemp("ct"), SMALL)


def test_echo(node_factory) -> None:
    node = node_factory()
    result = subprocess.run([dcmtk("echoscu"), "-aec", "RADNODE", "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_series_is_stored_at_uid_paths_and_recorded(node_factory, ct_series) -> None:
    node = node_factory()
    result = storescu(node.port, ct_series)
    assert result.returncode == 0, result.stderr
    store = node.store()
    assert store.count_instances() == len(ct_series)
    for path in ct_series:
        sent = pydicom.dcmread(path)
        relative = (f"{sent.StudyInstanceUID}/{sent.SeriesInstanceUID}/"
                    f"{sent.SOPInstanceUID}.dcm")
        stored = pydicom.dcmread(node.data_dir / "spool" / relative)
        assert stored.file_meta.MediaStorageSOPInstanceUID == sent.SOPInstanceUID
        assert stored.file_meta.MediaStorageSOPClassUID == sent.SOPClassUID
        assert stored.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert stored.file_meta.SourceApplicationEntityTitle == "STORESCU"
        assert stored.file_meta.ImplementationClassUID.startswith("2.25.")
        assert np.array_equal(stored.pixel_array, sent.pixel_array)
        assert stored.PatientID == sent.PatientID
    series = store.series(pydicom.dcmread(ct_series[0]).SeriesInstanceUID)
    assert series is not None and series.instance_count == len(ct_series)
    assert series.state == "receiving" and series.calling_ae == "STORESCU"
    assert not list((node.data_dir / "spool" / ".tmp").iterdir())


def test_duplicate_is_stored_once_and_recorded_once(node_factory, ct_series) -> None:
    node = node_factory()
    assert storescu(node.port, ct_series[:3]).returncode == 0
    again = storescu(node.port, ct_series[:3])
    assert again.returncode == 0, again.stderr
    assert "Success" in again.stdout + again.stderr
    store = node.store()
    assert store.count_instances() == 3
    series = store.series(pydicom.dcmread(ct_series[0]).SeriesInstanceUID)
    assert series is not None and series.instance_count == 3
    files = list((node.data_dir / "spool").rglob("*.dcm"))
    assert len(files) == 3


# storescu's option to propose each transfer syntax first
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2": "-xi",
}


def _compress(src: Path, dst: Path, tool: str, *args: str) -> Path:
    subprocess.run([dcmtk(tool), *args, str(src), str(dst)], check=True, capture_output=True)
    return dst


def test_compressed_transfer_syntaxes_are_accepted(node_factory, ct_series, tmp_path) -> None:
    from pydicom.uid import JPEG2000Lossless

    src = ct_series[0]
    variants = {
        "1.2.840.10008.1.2.4.70": _compress(src, tmp_path / "jpegll.dcm", "dcmcjpeg", "+e1"),
        "1.2.840.10008.1.2.4.57": _compress(src, tmp_path / "jpeg57.dcm", "dcmcjpeg", "+el"),
        "1.2.840.10008.1.2.4.80": _compress(src, tmp_path / "jls.dcm", "dcmcjpls"),
        "1.2.840.10008.1.2.5": _compress(src, tmp_path / "rle.dcm", "dcmcrle"),
        "1.2.840.10008.1.2.1.99": _compress(src, tmp_path / "deflate.dcm", "dcmconv", "+td"),
        "1.2.840.10008.1.2": _compress(src, tmp_path / "implicit.dcm", "dcmconv", "+ti"),
    }
    ds = pydicom.dcmread(src)
    ds.compress(JPEG2000Lossless)
    ds.save_as(tmp_path / "j2k.dcm")
    variants[JPEG2000Lossless] = tmp_path / "j2k.dcm"
    # 8-bit JPEG baseline needs an 8-bit image
    eight = pydicom.dcmread(src)
    pixels = (eight.pixel_array.astype(np.int32) // 16).clip(0, 255).astype(np.uint8)
    eight.BitsAllocated, eight.BitsStored, eight.HighBit, eight.PixelRepresentation = 8, 8, 7, 0
    eight.PixelData = pixels.tobytes()
    eight.save_as(tmp_path / "eight.dcm")
    variants["1.2.840.10008.1.2.4.50"] = _compress(
        tmp_path / "eight.dcm", tmp_path / "baseline.dcm", "dcmcjpeg", "+eb")
    variants["1.2.840.10008.1.2.4.51"] = _compress(
        tmp_path / "eight.dcm", tmp_path / "extended.dcm", "dcmcjpeg", "+ee")

    node = node_factory()
    store = node.store()
    for syntax, path in variants.items():
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == syntax, path.name
        ds.SOPInstanceUID = generate_uid()  # each a new instance of the series
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(path)
        option = STORESCU_PROPOSE.get(syntax)
        if option is None:  # storescu cannot propose JPEG process 14: send with pynetdicom
            assert scu_statuses(node.port, [path]) == [0]
        else:
            result = storescu(node.port, [path], option)
            assert result.returncode == 0, f"{syntax}: {result.stderr}"
        stored = node.data_dir / "spool" / (
            f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm")
        assert stored.is_file(), f"{syntax} not stored:\n{result.stdout}{result.stderr}"
        back = pydicom.dcmread(stored)
        assert back.file_meta.TransferSyntaxUID == syntax
    assert store.count_instances() == len(variants)


def test_dataset_request_mismatch_gets_A900(node_factory, ct_series, tmp_path) -> None:
    node = node_factory()
    ds = pydicom.dcmread(ct_series[1])
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # request differs from dataset
    ds.save_as(tmp_path / "mismatch.dcm")
    assert scu_statuses(node.port, [tmp_path / "mismatch.dcm", ct_series[2]]) == [0xA900, 0]
    assert node.store().count_instances() == 1
    assert "differ from the request" in node.log()


def test_unreadable_dataset_gets_C000_and_others_go_on(node_factory, ct_series, tmp_path) -> None:
    node = node_factory()
    good = ct_series[3]
    ds = pydicom.dcmread(good, stop_before_pixels=True)
    bad = tmp_path / "truncated.dcm"
    pydicom.dcmwrite(bad, ds, enforce_file_format=True)
    head = bad.read_bytes()
    # valid file meta, then a dataset whose first element claims 64 KB and holds 21 bytes
    bad.write_bytes(head[:_meta_length(head)] + b"\x08\x00\x16\x00UI\xff\xff" + b"garbage" * 3)
    assert scu_statuses(node.port, [bad, good]) == [0xC000, 0]
    assert node.store().count_instances() == 1
    assert "unreadable dataset" in node.log()


def _meta_length(data: bytes) -> int:
    """Bytes of preamble, prefix and file meta group (group length is its first element)."""
    group_length = int.from_bytes(data[140:144], "little")
    return 144 + group_length


@pytest.mark.parametrize("bad_uid", ["../../../../tmp/evil", "1.2.3/../../x", "", "1.2.03.4"])
def test_unsafe_or_empty_uids_are_refused(node_factory, ct_series, tmp_path, bad_uid) -> None:
    node = node_factory()
    ds = pydicom.dcmread(ct_series[4])
    ds.StudyInstanceUID = bad_uid
    path = tmp_path / "bad.dcm"
    ds.save_as(path)
    assert scu_statuses(node.port, [path]) == [0xC001]
    spool = node.data_dir / "spool"
    assert [p for p in spool.rglob("*") if p.is_file()] == []
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil").exists()
    assert "StudyInstanceUID is" in node.log()


def test_real_series_with_empty_uids_is_refused(node_factory, shared_data) -> None:
    """The TotalSegmentator series has empty dataset UIDs: DCMTK will not even send it, and a
    sender that takes the UIDs from the file meta gets 0xA900 for every instance."""
    files = sorted((shared_data / "ct_abdomen_ts_dicom" / "dicom").iterdir())
    node = node_factory()
    result = storescu(node.port, files[:2])
    assert result.returncode != 0 or "Success" not in result.stdout
    assert scu_statuses(node.port, files[:3]) == [0xA900] * 3
    assert node.store().count_instances() == 0
    assert "SOP class/instance (empty, empty)" in node.log()


def test_disk_space_floor_gets_A700(node_factory, ct_series) -> None:
    node = node_factory({"storage": {"min_free_mb": 1024 * 1024 * 1024}})
    assert scu_statuses(node.port, ct_series[:2]) == [0xA700, 0xA700]
    assert node.store().count_instances() == 0
    assert "storage.min_free_mb" in node.log()


def test_failing_spool_write_gets_A700_and_the_association_goes_on(node_factory, ct_series,
                                                                    tmp_path) -> None:
    """A write that really fails (a 300 KB file-size limit on the node process, so a 512x512
    slice cannot be written): 0xA700, no partial file left, and a small instance sent next on
    the same association is stored."""
    small = write_series(tmp_path / "small", SeriesGeometry(rows=64, columns=64, slices=1))
    node = node_factory({"node": {"log_level": "INFO"}}, start=False)
    node.start(file_size_limit=300_000)
    assert scu_statuses(node.port, [ct_series[0], small[0]]) == [0xA700, 0x0000]
    assert node.store().count_instances() == 1
    assert "writing the spool failed" in node.log()
    assert not list((node.data_dir / "spool" / ".tmp").iterdir())


def test_calling_ae_allow_list(node_factory, ct_series) -> None:
    node = node_factory({"access": {"calling_ae_titles": ["MODALITY1"]}})
    denied = storescu(node.port, ct_series[:1], "-aet", "INTRUDER")
    assert denied.returncode != 0
    assert "Rejected" in denied.stdout + denied.stderr
    allowed = storescu(node.port, ct_series[:1], "-aet", "MODALITY1")
    assert allowed.returncode == 0, allowed.stderr
    assert node.store().count_instances() == 1
    assert "access control is open" not in node.log()


def test_called_ae_title_is_checked(node_factory, ct_series) -> None:
    node = node_factory()
    wrong = storescu(node.port, ct_series[:1], aec="SOMEONEELSE")
    assert wrong.returncode != 0
    assert "Rejected" in wrong.stdout + wrong.stderr
    assert node.store().count_instances() == 0


def test_address_allow_list(node_factory, ct_series) -> None:
    denied = node_factory({"access": {"addresses": ["10.0.0.0/8"]}}, name="denied")
    result = storescu(denied.port, ct_series[:1])
    assert result.returncode != 0 and "Rejected" in result.stdout + result.stderr
    assert "address not in access.addresses" in denied.log()
    allowed = node_factory({"access": {"addresses": ["127.0.0.0/8"]}}, name="allowed")
    assert storescu(allowed.port, ct_series[:1]).returncode == 0


def test_open_access_warns_at_start(node_factory) -> None:
    node = node_factory()
    assert "access control is open" in node.log()


def test_max_associations(node_factory, ct_series) -> None:
    node = node_factory({"node": {"max_associations": 1}})
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(CTImageStorage)
    holder = ae.associate("127.0.0.1", node.port, ae_title="RADNODE")
    assert holder.is_established
    try:
        second = storescu(node.port, ct_series[:1])
        assert second.returncode != 0
    finally:
        holder.release()
    assert storescu(node.port, ct_series[:1]).returncode == 0


def test_kill_9_after_success_keeps_the_instance(node_factory, ct_series) -> None:
    node = node_factory()
    result = storescu(node.port, ct_series[5:8])
    assert result.returncode == 0
    node.kill()  # SIGKILL right after the last Success
    node.start()
    store = node.store()
    assert store.count_instances() == 3
    for path in ct_series[5:8]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert store.has_instance(ds.SOPInstanceUID)
        stored = (node.data_dir / "spool" / ds.StudyInstanceUID / ds.SeriesInstanceUID /
                  f"{ds.SOPInstanceUID}.dcm")
        assert pydicom.dcmread(stored).SOPInstanceUID == ds.SOPInstanceUID


def test_restart_removes_partial_files_and_records_orphans(node_factory, ct_series) -> None:
    """What a crash can leave: a half-written temporary file, and a whole file whose row was
    lost (power loss between rename and commit)."""
    node = node_factory(start=False)
    spool = node.data_dir / "spool"
    (spool / ".tmp").mkdir(parents=True)
    (spool / ".tmp" / "abc.part").write_bytes(b"half")
    ds = pydicom.dcmread(ct_series[9])
    orphan = spool / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    orphan.parent.mkdir(parents=True)
    ds.save_as(orphan)
    node.start()
    assert not (spool / ".tmp" / "abc.part").exists()
    assert node.store().has_instance(ds.SOPInstanceUID)
    assert "re-recorded 1 instances" in node.log()


def test_label_map_segmentation_is_accepted(node_factory, tmp_path) -> None:
    """Label Map Segmentation Storage (DICOM 2024c) is among the SOP classes the node takes."""
    from support.results import (
        ball_label_map,
        ball_series,
        seg_kwargs,
        segmentation_output,
    )

    from node.results import LABELMAP_SOP_CLASS, build_segmentation, read_sources, write_dataset

    _, volume = ball_series(tmp_path / "ct")
    seg = build_segmentation(read_sources(volume), segmentation_output(ball_label_map(volume)),
                             **seg_kwargs(), seg_type="labelmap")
    written = write_dataset(seg, tmp_path / "labelmap.dcm")
    assert written.sop_class_uid == LABELMAP_SOP_CLASS
    node = node_factory()
    assert scu_statuses(node.port, [written.path]) == [0]
    series = node.store().series(str(seg.SeriesInstanceUID))
    assert series is not None and series.modality == "SEG"
