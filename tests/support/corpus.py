"""The bad-input corpus, generated: each case builds its files from a small valid CT series.

Two kinds of case:

* ``StoreCase``: bytes that the receiver must refuse (or take) at C-STORE time, with the exact
  DIMSE status. Each builds one file: a PS3.10 header (which tells the sender the request's SOP
  class, instance and transfer syntax) followed by the dataset bytes sent as they are.
* ``JobCase``: valid DICOM that is stored, but cannot make a trustworthy volume or would bomb the
  decoder: its series' job must fail with a reason naming the problem.

Every dataset carries the canary patient below, so tests can assert no reason or log line leaks
patient data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    JPEG2000,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from node.receiver.part10 import file_header
from node.synthetic import SeriesGeometry, write_series

CANARY_NAME = "Canary^Leaky"
CANARY_ID = "CANARY-PHI-7731"
SLICES = 24  # lung_ct accepts 20 or more: job cases must be routed
SMALL = SeriesGeometry(rows=64, columns=64, slices=SLICES, pixel_spacing=(6.0, 6.0),
                       slice_spacing=3.0, origin=(-192.0, -192.0, 0.0))
HUGE = 65535  # Rows/Columns of the bomb cases: 4.3e9 voxels per slice

SUCCESS, OUT_OF_RESOURCES, MISMATCH, CANNOT_UNDERSTAND, INVALID_UID = (
    0x0000, 0xA700, 0xA900, 0xC000, 0xC001)


def series(folder: Path, geometry: SeriesGeometry = SMALL, **kwargs: object) -> list[Path]:
    """A fresh valid series (new UIDs) with the canary patient."""
    return write_series(folder, geometry, patient_name=CANARY_NAME, patient_id=CANARY_ID,
                        **kwargs)  # type: ignore[arg-type]


def encode(ds: Dataset, implicit: bool = False, little: bool = True) -> bytes:
    """A dataset's body bytes (no file meta), as pydicom writes them."""
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, ds)
    return fp.getvalue()


def raw_file(path: Path, body: bytes, sop_class: str, sop_instance: str,
             syntax: str = ExplicitVRLittleEndian) -> Path:
    """A file whose meta names the request and whose dataset bytes are ``body``, as given."""
    path.write_bytes(file_header(sop_class, sop_instance, syntax) + body)
    return path


def element(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element; ``length`` overrides the length field."""
    n = len(value) if length is None else length
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"OF", b"UC"):
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr, n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, n) + value


def identity(sop_instance: str, sop_class: str = CTImageStorage, study: str | None = None,
             series_uid: str | None = None) -> bytes:
    """The top-level identity elements, in tag order, as the receiver reads them."""
    def ui(value: str) -> bytes:
        raw = value.encode("latin-1")
        return raw + b"\0" if len(raw) % 2 else raw

    return b"".join((
        element(0x00080016, b"UI", ui(sop_class)),
        element(0x00080018, b"UI", ui(sop_instance)),
        element(0x00080060, b"CS", b"CT"),
        element(0x00100010, b"PN", CANARY_NAME.encode()),
        element(0x0020000D, b"UI", ui(study or generate_uid())),
        element(0x0020000E, b"UI", ui(series_uid or generate_uid())),
    ))


# -- C-STORE-time cases ---------------------------------------------------------------------

@dataclass(frozen=True)
class StoreCase:
    id: str
    build: Callable[[Path, Path], Path]  # (work folder, a valid file) -> the file to send
    status: int
    what: str  # what the node must say or do


def _from_valid(mutate: Callable[[Dataset], None], syntax: str = ExplicitVRLittleEndian,
                implicit: bool = False, little: bool = True, request_uid: str | None = None
                ) -> Callable[[Path, Path], Path]:
    """A case made by changing a valid dataset; the request keeps the dataset's UIDs unless
    ``request_uid`` is given."""
    def build(work: Path, valid: Path) -> Path:
        ds = pydicom.dcmread(valid)
        ds.SOPInstanceUID = generate_uid()
        request = request_uid or ds.SOPInstanceUID
        sop_class = ds.SOPClassUID
        mutate(ds)
        body = encode(ds, implicit, little)
        return raw_file(work / "case.dcm", body, sop_class, request, syntax)
    return build


def _raw(body: Callable[[str], bytes], syntax: str = ExplicitVRLittleEndian,
         sop_class: str = CTImageStorage) -> Callable[[Path, Path], Path]:
    def build(work: Path, valid: Path) -> Path:
        uid = generate_uid()
        return raw_file(work / "case.dcm", body(uid), sop_class, uid, syntax)
    return build


def _valid_body(valid: Path) -> tuple[bytes, str]:
    data = valid.read_bytes()
    meta_end = 144 + int.from_bytes(data[140:144], "little")
    return data[meta_end:], pydicom.dcmread(valid, stop_before_pixels=True).SOPInstanceUID


def _cut(fraction_of_pixels: float | None, keep: int = 0) -> Callable[[Path, Path], Path]:
    def build(work: Path, valid: Path) -> Path:
        body, uid = _valid_body(valid)
        if fraction_of_pixels is None:
            body = body[:keep]
        else:
            pixels = 64 * 64 * 2
            body = body[: len(body) - int(pixels * (1 - fraction_of_pixels))]
        return raw_file(work / "case.dcm", body, CTImageStorage, uid)
    return build


def _pixel_length_claim(claim: int) -> Callable[[Path, Path], Path]:
    """Pixel data whose length field claims ``claim`` bytes; 8 KB follow."""
    def build(work: Path, valid: Path) -> Path:
        body, uid = _valid_body(valid)
        at = body.rfind(b"\xe0\x7f\x10\x00OW")
        body = body[:at] + element(0x7FE00010, b"OW", b"\0" * 8192, length=claim)
        return raw_file(work / "case.dcm", body, CTImageStorage, uid)
    return build


def _nested(depth: int, defined: bool) -> Callable[[str], bytes]:
    def body(uid: str) -> bytes:
        inner = element(0x00100020, b"LO", b"X" * 4)
        for _ in range(depth):
            if defined:
                item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
                inner = element(0x00081115, b"SQ", item)
            else:
                item = (struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
                        + struct.pack("<HHL", 0xFFFE, 0xE00D, 0))
                inner = (element(0x00081115, b"SQ", b"", length=0xFFFFFFFF) + item
                         + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
        return identity(uid) + inner
    return body


def _undelimited(kind: str) -> Callable[[str], bytes]:
    """Undefined-length sequences or items whose delimiter never comes."""
    def body(uid: str) -> bytes:
        start = identity(uid)
        item_open = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
        sq = element(0x00081115, b"SQ", b"", length=0xFFFFFFFF)
        leaf = element(0x00081150, b"UI", CTImageStorage.encode())
        if kind == "sequence":  # the item ends, the sequence never does
            return start + sq + item_open + leaf + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        if kind == "item":  # an item that never ends
            return start + sq + item_open + leaf
        if kind == "garbage":  # a non-item element where an item must be
            return start + sq + leaf + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        # encapsulated pixel data: offset table, one fragment, no sequence delimiter
        return (start + element(0x00280010, b"US", b"\x40\x00")
                + element(0x7FE00010, b"OB", b"", length=0xFFFFFFFF)
                + struct.pack("<HHL", 0xFFFE, 0xE000, 0)
                + struct.pack("<HHL", 0xFFFE, 0xE000, 16) + b"\xff\x4f" + b"\0" * 14)
    return body


def _deflated(bomb: bool) -> Callable[[Path, Path], Path]:
    """A deflated dataset: a bomb (a few MB that inflate to 4 GB) or a corrupt stream."""
    def build(work: Path, valid: Path) -> Path:
        uid = generate_uid()
        head = identity(uid)
        if bomb:  # full flushes make each 16 MB block of zeros the same bytes: repeat them
            block, blocks = 1 << 24, 255
            deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            start = deflater.compress(
                head + element(0x00091010, b"OB", b"", length=block * blocks))
            start += deflater.flush(zlib.Z_FULL_FLUSH)
            zeros = deflater.compress(b"\0" * block) + deflater.flush(zlib.Z_FULL_FLUSH)
            body = start + zeros * blocks + deflater.flush()
        else:
            body = zlib.compress(head, 6)[2:-4][:40] + b"\x07\xff not deflate at all" * 10
        return raw_file(work / "case.dcm", body, CTImageStorage, uid,
                        DeflatedExplicitVRLittleEndian)
    return build


def _set(**attributes: object) -> Callable[[Dataset], None]:
    def mutate(ds: Dataset) -> None:
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
    return mutate


def _wrong_vr_long_as_short(uid: str) -> bytes:
    """An OB element written with a 2-byte length (as if it were a short VR)."""
    return identity(uid) + struct.pack("<HH2sH", 0x0009, 0x1010, b"OB", 8) + b"12345678" + (
        element(0x00280010, b"US", b"\x40\x00"))


def _odd_length_text(uid: str) -> bytes:
    """A text value of odd length (PS3.5 7.1.1 requires even lengths): read leniently."""
    return identity(uid) + element(0x00204000, b"LT", b"odd")


STORE_CASES: list[StoreCase] = [
    StoreCase("not-dicom-text", _raw(lambda uid: b"GET / HTTP/1.1\r\nHost: node\r\n\r\n" * 40),
              CANNOT_UNDERSTAND, "unreadable dataset"),
    StoreCase("not-dicom-png", _raw(lambda uid: b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8),
              CANNOT_UNDERSTAND, "unreadable dataset"),
    StoreCase("not-dicom-zero-bytes", _raw(lambda uid: b"\0" * 4096), MISMATCH,
              "differ from the request"),
    StoreCase("empty-dataset", _raw(lambda uid: b""), MISMATCH, "differ from the request"),
    StoreCase("truncated-header", _cut(None, keep=301), CANNOT_UNDERSTAND,
              "unreadable dataset"),
    StoreCase("truncated-pixel-data", _cut(0.5), CANNOT_UNDERSTAND, "unreadable dataset"),
    StoreCase("truncated-one-byte", _cut(None, keep=-1), CANNOT_UNDERSTAND,
              "unreadable dataset"),
    StoreCase("pixel-length-claims-4GB", _pixel_length_claim(0xFFFFFFF0), CANNOT_UNDERSTAND,
              "claims 4294967280 bytes"),
    StoreCase("header-length-claims-4GB",
              _raw(lambda uid: identity(uid) + element(0x00091010, b"OB", b"\0" * 64,
                                                       length=0xFFFFFF00)),
              CANNOT_UNDERSTAND, "claims 4294967040 bytes"),
    StoreCase("short-vr-length-overrun",
              _raw(lambda uid: identity(uid) + element(0x00081030, b"LO", b"x" * 10,
                                                       length=0xFFFE)),
              CANNOT_UNDERSTAND, "claims 65534 bytes"),
    StoreCase("nested-sequences-deep", _raw(_nested(200, defined=False)), CANNOT_UNDERSTAND,
              "nested too deeply"),
    StoreCase("nested-sequences-deep-defined", _raw(_nested(200, defined=True)),
              CANNOT_UNDERSTAND, "nested too deeply"),
    StoreCase("sequence-without-delimiter", _raw(_undelimited("sequence")), CANNOT_UNDERSTAND,
              "has no end delimiter"),
    StoreCase("item-without-delimiter", _raw(_undelimited("item")), CANNOT_UNDERSTAND,
              "unreadable dataset"),
    StoreCase("sequence-holds-no-item", _raw(_undelimited("garbage")), CANNOT_UNDERSTAND,
              "expected an item"),
    StoreCase("encapsulated-without-delimiter", _raw(_undelimited("pixels")), CANNOT_UNDERSTAND,
              "has no end delimiter"),
    StoreCase("wrong-vr-long-as-short", _raw(_wrong_vr_long_as_short), CANNOT_UNDERSTAND,
              "unreadable dataset"),
    StoreCase("odd-length-text-value", _raw(_odd_length_text), SUCCESS, "tolerated"),
    StoreCase("deflate-bomb-4GB", _deflated(bomb=True), CANNOT_UNDERSTAND,
              "inflates to more than"),
    StoreCase("deflate-corrupt", _deflated(bomb=False), CANNOT_UNDERSTAND,
              "unreadable dataset"),
    StoreCase("study-uid-empty", _from_valid(_set(StudyInstanceUID="")), INVALID_UID,
              "StudyInstanceUID is empty"),
    StoreCase("series-uid-empty", _from_valid(_set(SeriesInstanceUID="")), INVALID_UID,
              "SeriesInstanceUID is empty"),
    StoreCase("sop-instance-uid-empty", _from_valid(_set(SOPInstanceUID="")), MISMATCH,
              "differ from the request"),
    StoreCase("study-uid-letters", _from_valid(_set(StudyInstanceUID="1.2.abc.4")), INVALID_UID,
              "StudyInstanceUID is not a valid UID"),
    StoreCase("series-uid-leading-zero", _from_valid(_set(SeriesInstanceUID="1.2.03.4")),
              INVALID_UID, "SeriesInstanceUID is not a valid UID"),
    StoreCase("study-uid-65-chars", _from_valid(_set(StudyInstanceUID="1." + "2" * 63)),
              INVALID_UID, "StudyInstanceUID is not a valid UID"),
    StoreCase("series-uid-trailing-dot", _from_valid(_set(SeriesInstanceUID="1.2.3.")),
              INVALID_UID, "SeriesInstanceUID is not a valid UID"),
    StoreCase("study-uid-multivalued", _from_valid(_set(StudyInstanceUID=["1.2.3", "1.2.4"])),
              INVALID_UID, "StudyInstanceUID is not a valid UID"),
    StoreCase("study-uid-path-traversal",
              _from_valid(_set(StudyInstanceUID="../../../../tmp/radnode-evil")), INVALID_UID,
              "StudyInstanceUID is not a valid UID"),
    StoreCase("series-uid-path-traversal", _from_valid(_set(SeriesInstanceUID="1.2/../../../x")),
              INVALID_UID, "SeriesInstanceUID is not a valid UID"),
    StoreCase("series-uid-absolute-path", _from_valid(_set(SeriesInstanceUID="/etc/cron.d/x")),
              INVALID_UID, "SeriesInstanceUID is not a valid UID"),
    StoreCase("study-uid-nul-traversal",
              _from_valid(_set(StudyInstanceUID="1.2.3\0/../../x")), INVALID_UID,
              "StudyInstanceUID is not a valid UID"),
    StoreCase("sop-class-mismatch", _from_valid(_set(SOPClassUID=MRImageStorage)), MISMATCH,
              "differ from the request"),
    StoreCase("sop-instance-mismatch", _from_valid(lambda ds: None, request_uid="1.2.3.4.5"),
              MISMATCH, "differ from the request"),
    StoreCase("meta-says-explicit-data-implicit", _from_valid(lambda ds: None, implicit=True),
              CANNOT_UNDERSTAND, "unreadable dataset"),
    StoreCase("meta-says-big-endian-data-little", _from_valid(lambda ds: None,
                                                              syntax=ExplicitVRBigEndian),
              CANNOT_UNDERSTAND, "unreadable dataset"),
]


# -- job-time cases --------------------------------------------------------------------------

@dataclass(frozen=True)
class JobCase:
    id: str
    build: Callable[[Path], list[Path]]  # folder -> a series of files, all stored with Success
    reason: str  # text the job's error must contain


def _each(mutate: Callable[[Dataset, int], None], geometry: SeriesGeometry = SMALL,
          syntax: str | None = None) -> Callable[[Path], list[Path]]:
    def build(folder: Path) -> list[Path]:
        files = series(folder, geometry)
        for k, path in enumerate(files):
            ds = pydicom.dcmread(path)
            mutate(ds, k)
            ds.save_as(path, enforce_file_format=True)
            if syntax is not None:  # a file meta that lies about the encoding
                body, uid = _valid_body(path)
                raw_file(path, body, ds.SOPClassUID, uid, syntax)
        return files
    return build


def _no_pixels(ds: Dataset, k: int) -> None:
    del ds.PixelData


def _short_pixels(n: int) -> Callable[[Dataset, int], None]:
    def mutate(ds: Dataset, k: int) -> None:
        ds.PixelData = ds.PixelData[:n]
    return mutate


def _odd_pixel_length(folder: Path) -> list[Path]:
    """Pixel data one byte short, with an odd length field (written by hand)."""
    files = series(folder)
    for path in files:
        data = path.read_bytes()
        at = data.rfind(b"\xe0\x7f\x10\x00OW")
        n = 64 * 64 * 2 - 1
        path.write_bytes(data[:at] + element(0x7FE00010, b"OB", data[at + 12: at + 12 + n]))
    return files


def _k_slice(change: Callable[[Dataset], None], which: int = SLICES // 2
             ) -> Callable[[Dataset, int], None]:
    def mutate(ds: Dataset, k: int) -> None:
        if k == which:
            change(ds)
    return mutate


def _smaller(ds: Dataset) -> None:
    ds.Rows, ds.Columns = 32, 32
    ds.PixelData = ds.PixelData[: 32 * 32 * 2]


def _huge_native(ds: Dataset, k: int) -> None:
    ds.Rows = ds.Columns = HUGE
    ds.PixelData = b"\0" * 1024


def _every(mutate: Callable[[Dataset], None]) -> Callable[[Dataset, int], None]:
    return lambda ds, k: mutate(ds)


def _one_by_one(ds: Dataset, k: int) -> None:
    ds.Rows = ds.Columns = 1
    ds.PixelData = b"\0\0"


def _moderate_native(ds: Dataset, k: int) -> None:
    """8192 x 8192 x 24 slices (1.6e9 voxels, under the limit) with 1 KB of pixel data each;
    0.05 mm pixels keep the images a plausible 41 cm wide."""
    ds.Rows = ds.Columns = 8192
    ds.PixelSpacing = [0.05, 0.05]
    ds.PixelData = b"\0" * 1024


def _j2k_frame(rows: int = 64, columns: int = 64, lossless: bool = True) -> bytes:
    ds = pydicom.dcmread(series_template())
    ds.compress(JPEG2000Lossless if lossless else JPEG2000)
    frames = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)
    frame = bytes(next(frames))
    if (rows, columns) != (64, 64):
        frame = _patch_siz(frame, rows, columns)
    return frame


def _patch_siz(frame: bytes, rows: int, columns: int) -> bytes:
    """Set the SIZ marker's image and tile size (a J2K 'decompression bomb')."""
    at = frame.find(b"\xff\x51")
    head = bytearray(frame)
    # SIZ: marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, ...
    struct.pack_into(">LLLLLL", head, at + 6, columns, rows, 0, 0, columns, rows)
    return bytes(head)


_TEMPLATE: list[Path] = []


def series_template() -> Path:
    """One valid 64 x 64 CT slice, written once (set by the test module's fixture)."""
    return _TEMPLATE[0]


def _encapsulated(frame: Callable[[], bytes], rows: int, columns: int, syntax: str
                  ) -> Callable[[Dataset, int], None]:
    def mutate(ds: Dataset, k: int) -> None:
        ds.Rows, ds.Columns = rows, columns
        ds.PixelData = encapsulate([frame()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    return mutate


def _rle_frame(segments: int = 2) -> bytes:
    """An RLE frame: header with ``segments`` offsets, each segment a tiny literal run."""
    header = struct.pack("<L", segments) + b"".join(
        struct.pack("<L", 64 + 4 * i) for i in range(segments)) + b"\0" * (60 - 4 * segments)
    return header + b"\x00\x00\x00\x00" * segments


def _jpeg_sof_bomb() -> bytes:
    """A JPEG lossless (process 14) frame whose SOF3 claims 65000 x 65000 pixels."""
    import subprocess

    from support.tools import dcmtk

    src = series_template()
    out = src.parent / "jpeg-template.dcm"
    if not out.exists():
        subprocess.run([dcmtk("dcmcjpeg"), "+e1", str(src), str(out)], check=True,
                       capture_output=True)
    ds = pydicom.dcmread(out)
    frame = bytearray(next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1)))
    at = frame.find(b"\xff\xc3")
    struct.pack_into(">HH", frame, at + 5, 65000, 65000)  # marker, Lf, P, then Y, X
    return bytes(frame)


def _patched(tag: int, vr: bytes, value: bytes) -> Callable[[Path], list[Path]]:
    """A series whose element ``tag`` (a short-VR element) is rewritten by hand: values that
    pydicom would refuse to write."""
    def build(folder: Path) -> list[Path]:
        files = series(folder)
        for path in files:
            data = path.read_bytes()
            at = data.find(struct.pack("<HH", tag >> 16, tag & 0xFFFF))
            (n,) = struct.unpack_from("<H", data, at + 6)
            path.write_bytes(data[:at] + element(tag, vr, value) + data[at + 8 + n:])
        return files
    return build


def _rgb(ds: Dataset, k: int) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = b"\0" * (64 * 64 * 3)


def _gap(ds: Dataset, k: int) -> None:
    if k >= SLICES // 2:
        ds.ImagePositionPatient = [-192.0, -192.0, 3.0 * k + 60.0]


def _tilt(ds: Dataset, k: int) -> None:
    ds.ImagePositionPatient = [-192.0, -192.0 + 1.5 * k, 3.0 * k]


JOB_CASES: list[JobCase] = [
    JobCase("missing-pixel-data", _each(_no_pixels), "has no pixel data"),
    JobCase("pixel-data-short", _each(_short_pixels(1000)), "pixel data is short"),
    JobCase("pixel-data-odd-length", _odd_pixel_length, "pixel data is short"),
    JobCase("mixed-sizes", _each(_k_slice(_smaller)), "mixed image sizes"),
    JobCase("mixed-orientations",
            _each(_k_slice(_set(ImageOrientationPatient=[1, 0, 0, 0, 0, -1]))),
            "mixed orientations"),
    JobCase("duplicate-positions",
            _each(_k_slice(_set(ImagePositionPatient=[-192.0, -192.0, 0.0]))),
            "duplicate slice positions"),
    JobCase("big-gap", _each(_gap), "missing slices"),
    JobCase("gantry-tilt", _each(_tilt), "gantry tilt"),
    JobCase("position-not-numeric", _patched(0x00200032, b"DS", b"a\\b\\c "),
            "ImagePositionPatient is not numeric"),
    JobCase("position-not-finite", _patched(0x00200032, b"DS", b"nan\\0\\inf "),
            "ImagePositionPatient must hold 3 finite numbers"),
    JobCase("pixel-spacing-zero", _each(lambda ds, k: setattr(ds, "PixelSpacing", [0, 0])),
            "PixelSpacing must be positive"),
    JobCase("pixel-spacing-wrong-vr", _patched(0x00280030, b"FD", b"6\\6.0\0"),
            "PixelSpacing cannot be read: its value does not fit its VR FD"),
    JobCase("colour-image", _each(_rgb), "colour images are not supported"),
    JobCase("bomb-native-65535x65535", _each(_huge_native), "workers.max_voxels"),
    JobCase("bomb-native-8192x8192-short", _each(_moderate_native), "pixel data is short"),
    JobCase("bomb-j2k-rows-columns",
            _each(_encapsulated(lambda: _j2k_frame(HUGE, HUGE), HUGE, HUGE, JPEG2000Lossless)),
            "workers.max_voxels"),
    JobCase("bomb-j2k-siz-only",
            _each(_encapsulated(lambda: _j2k_frame(HUGE, HUGE), 64, 64, JPEG2000Lossless)),
            "declares 65535 x 65535"),
    JobCase("bomb-rle-rows-columns",
            _each(_encapsulated(_rle_frame, HUGE, HUGE, RLELossless)), "workers.max_voxels"),
    JobCase("bomb-jpeg-sof",
            _each(_encapsulated(_jpeg_sof_bomb, 64, 64, JPEGLosslessSV1)),
            "declares 65000 x 65000"),
    JobCase("j2k-garbage",
            _each(_encapsulated(lambda: b"\xff\x4f\xff\x51" + bytes(range(200)), 64, 64,
                                JPEG2000Lossless)), "pixel data could not be decoded"),
    JobCase("rle-bad-segment-count",
            _each(_encapsulated(lambda: _rle_frame(15), 64, 64, RLELossless)),
            "pixel data could not be decoded"),
    JobCase("meta-says-j2k-data-native", _each(lambda ds, k: None, syntax=JPEG2000Lossless),
            "pixel data could not be decoded"),
    # Values that make no sense (issue 13): refused with a reason, never "done" and empty.
    JobCase("tiny-series-huge-pixel-spacing",
            _each(lambda ds, k: setattr(ds, "PixelSpacing", [200, 200])),
            "implausible geometry: PixelSpacing (rows) 200 mm"),
    JobCase("pixel-spacing-1e6", _each(lambda ds, k: setattr(ds, "PixelSpacing", [1e6, 1e6])),
            "implausible geometry: PixelSpacing"),
    JobCase("rescale-slope-1e308", _each(_every(_set(RescaleSlope="1e308"))),
            "RescaleSlope 1e+308 and RescaleIntercept"),
    JobCase("rescale-slope-zero", _each(_every(_set(RescaleSlope=0))),
            "RescaleSlope/RescaleIntercept are invalid"),
    JobCase("bits-stored-zero", _each(_every(_set(BitsStored=0))), "BitsStored is 0"),
    JobCase("pixel-representation-2", _each(_every(_set(PixelRepresentation=2))),
            "PixelRepresentation is 2"),
    JobCase("samples-per-pixel-zero", _each(_every(_set(SamplesPerPixel=0))),
            "SamplesPerPixel is 0"),
    JobCase("one-by-one-images", _each(_one_by_one), "images of 1 x 1 pixels are too small"),
]
