"""Image files (NIfTI, NRRD, MetaImage, FreeSurfer MGH/MGZ) load with their exact geometry, and
broken ones are refused with one line.

Files are written by the libraries other tools use (SimpleITK for NIfTI/NRRD/MetaImage, nibabel
for MGZ), so a convention slip in the node's readers (RAS vs LPS, [i, j, k] vs [k, j, i]) fails.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from support.series import rotation

from node.imaging import VolumeError, load_image_file, load_input
from node.imaging.inputs import image_format
from node.imaging.resample import orientation_code
from node.imaging.sitk_io import load_nifti, to_sitk
from node.imaging.volume import Volume

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# i toward Left (+x in LPS), j toward Inferior (-z), k toward Anterior (-y): FreeSurfer's LIA.
LIA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])
DIRECTIONS = {"LIA": LIA, "oblique": rotation(30.0, -20.0)}
SITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# What each format stores: NIfTI's sform/qform and MGH's header are float32, the others text.
TOLERANCE = {".nii": 2e-5, ".nii.gz": 2e-5, ".mgz": 2e-5, ".mgh": 2e-5}


def _volume(direction: np.ndarray, dtype: type = np.int16) -> Volume:
    rng = np.random.default_rng(3)
    return Volume(
        array=rng.integers(-1000, 3000, size=(5, 6, 7)).astype(dtype),  # [k, j, i]: 7 x 6 x 5
        spacing=(0.75, 1.25, 3.5),
        origin=(-101.5, 37.25, -12.0),
        direction=direction,
    )


def write_mgh(volume: Volume, path) -> None:
    """The volume as nibabel writes it: an [i, j, k] array with an (i, j, k) -> RAS affine."""
    image = nib.MGHImage(np.transpose(volume.array, (2, 1, 0)), RAS_TO_LPS @ volume.affine)
    nib.save(image, str(path))


def _assert_same(loaded: Volume, volume: Volume, tolerance: float) -> None:
    np.testing.assert_array_equal(loaded.array, volume.array)
    np.testing.assert_allclose(loaded.spacing, volume.spacing, rtol=0, atol=tolerance)
    np.testing.assert_allclose(loaded.origin, volume.origin, rtol=0, atol=tolerance * 10)
    np.testing.assert_allclose(loaded.direction, volume.direction, rtol=0, atol=tolerance)
    # The same voxel lands on the same patient point.
    np.testing.assert_allclose(loaded.index_to_patient([6, 5, 4]),
                               volume.index_to_patient([6, 5, 4]), rtol=0, atol=tolerance * 10)


@pytest.mark.parametrize("direction", DIRECTIONS, ids=list(DIRECTIONS))
@pytest.mark.parametrize("suffix", SITK_SUFFIXES)
def test_simpleitk_formats_round_trip(tmp_path, suffix, direction):
    volume = _volume(DIRECTIONS[direction])
    path = tmp_path / f"image{suffix}"
    sitk.WriteImage(to_sitk(volume), str(path))
    loaded = load_image_file(path, dtype=None)
    assert loaded.array.dtype == np.int16
    _assert_same(loaded, volume, TOLERANCE.get(suffix, 1e-9))
    assert orientation_code(loaded.direction) == orientation_code(volume.direction)


@pytest.mark.parametrize("direction", DIRECTIONS, ids=list(DIRECTIONS))
@pytest.mark.parametrize("suffix", [".mgz", ".mgh"])
def test_mgh_round_trip(tmp_path, suffix, direction):
    volume = _volume(DIRECTIONS[direction], np.float32)
    path = tmp_path / f"image{suffix}"
    write_mgh(volume, path)
    loaded = load_image_file(path)
    assert loaded.array.dtype == np.float32
    _assert_same(loaded, volume, TOLERANCE[suffix])


def test_lia_is_lia_in_both_conventions(tmp_path):
    """nibabel's 'LIA' (RAS letters, towards which each axis points) is the node's 'LIA'."""
    volume = _volume(LIA)
    path = tmp_path / "lia.mgz"
    write_mgh(volume, path)
    assert "".join(nib.aff2axcodes(nib.load(str(path)).affine)) == "LIA"
    assert orientation_code(load_image_file(path).direction) == "LIA"


def test_load_input_reads_every_format_as_float32(tmp_path):
    volume = _volume(LIA)
    for suffix in (".nrrd", ".mha", ".nii.gz"):
        sitk.WriteImage(to_sitk(volume), str(tmp_path / f"v{suffix}"))
    write_mgh(volume.with_array(volume.array.astype(np.float32)), tmp_path / "v.mgz")
    for suffix in (".nrrd", ".mha", ".nii.gz", ".mgz"):
        loaded = load_input(tmp_path / f"v{suffix}")
        assert loaded.array.dtype == np.float32
        np.testing.assert_array_equal(loaded.array, volume.array.astype(np.float32))


def test_suffix_dispatch_ignores_case_and_knows_compound_suffixes():
    assert image_format("a/B.NII.GZ") == "nifti"
    assert image_format("x.nhdr") == "nrrd"
    assert image_format("x.MHD") == "metaimage"
    assert image_format("brain.mgz") == "mgh"
    assert image_format("x.gz") is None
    assert image_format("IM0001") is None


def test_real_freesurfer_norm_mgz(shared_data):
    path = shared_data / "mr_brain_freesurfer_niivue" / "norm.mgz"
    volume = load_image_file(path, dtype=None)
    assert volume.array.shape == (256, 256, 256)
    assert volume.array.dtype == np.uint8
    assert volume.spacing == pytest.approx((1.0, 1.0, 1.0), abs=1e-6)
    assert orientation_code(volume.direction) == "LIA"
    # Against nibabel's own reading: voxel (i, j, k) sits where its RAS affine says, in LPS.
    reference = nib.load(str(path))
    data = np.asarray(reference.dataobj)
    ijk = np.array([[10, 200, 37], [128, 128, 128], [77, 140, 201]])
    ras = (reference.affine @ np.c_[ijk, np.ones(3)].T).T[:, :3]
    np.testing.assert_allclose(volume.index_to_patient(ijk), ras * [-1, -1, 1], atol=1e-4)
    for i, j, k in ijk:
        assert volume.array[k, j, i] == data[i, j, k]


def test_real_mgz_matches_simpleitk_reading_the_same_image_as_nifti(shared_data, tmp_path):
    """Two independent RAS -> LPS conversions (ours for MGH, ITK's for NIfTI) agree."""
    source = nib.load(str(shared_data / "mr_brain_freesurfer_niivue" / "norm.mgz"))
    nifti = tmp_path / "norm.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj), source.affine), str(nifti))
    ours = load_image_file(shared_data / "mr_brain_freesurfer_niivue" / "norm.mgz")
    itk = load_nifti(nifti)
    np.testing.assert_array_equal(ours.array, itk.array)
    np.testing.assert_allclose(ours.origin, itk.origin, atol=1e-4)
    np.testing.assert_allclose(ours.spacing, itk.spacing, atol=1e-5)
    np.testing.assert_allclose(ours.direction, itk.direction, atol=1e-5)


def _reason(path) -> str:
    with pytest.raises(VolumeError) as caught:
        load_input(path)
    reason = caught.value.reason
    assert "\n" not in reason and path.name not in reason  # one line, no file name (PHI)
    return reason


def _truncate(path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_text_file_named_nrrd(tmp_path):
    path = tmp_path / "notes.nrrd"
    path.write_text("this is not an image\n")
    assert _reason(path) == ("the NRRD file could not be read: truncated, or not a valid NRRD "
                             "file")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_refused_not_zero_filled(tmp_path, suffix):
    """ITK's reader fills the missing voxels with zeros; the node refuses the file."""
    path = tmp_path / f"cut{suffix}"
    sitk.WriteImage(to_sitk(_volume(LIA)), str(path))
    _truncate(path)
    assert "NIfTI file could not be read: truncated" in _reason(path)


def test_nifti_gzip_of_something_else(tmp_path):
    path = tmp_path / "x.nii.gz"
    path.write_bytes(gzip.compress(b"just some text, no header" * 40))
    assert "no NIfTI-1 or NIfTI-2 header" in _reason(path)


def test_multi_member_gzip_nifti_is_read(tmp_path):
    """A valid .nii.gz whose trailer does not give the whole size (two gzip members)."""
    volume = _volume(LIA)
    plain = tmp_path / "v.nii"
    sitk.WriteImage(to_sitk(volume), str(plain))
    data = plain.read_bytes()
    path = tmp_path / "two.nii.gz"
    path.write_bytes(gzip.compress(data[:500]) + gzip.compress(data[500:]))
    np.testing.assert_array_equal(load_image_file(path, dtype=None).array, volume.array)


def test_nifti_compression_is_read_from_the_content(tmp_path):
    """ITK reads a plain file named .nii.gz, so the node does; a gzip named .nii it does not
    (niftilib then prints to stderr), so the node says why first."""
    volume = _volume(LIA)
    sitk.WriteImage(to_sitk(volume), str(tmp_path / "plain.nii"))
    sitk.WriteImage(to_sitk(volume), str(tmp_path / "packed.nii.gz"))
    (tmp_path / "plain.nii").rename(tmp_path / "plain.nii.gz")
    (tmp_path / "packed.nii.gz").rename(tmp_path / "packed.nii")
    loaded = load_image_file(tmp_path / "plain.nii.gz", dtype=None)
    np.testing.assert_array_equal(loaded.array, volume.array)
    assert "gzip-compressed but its name does not end in .gz" in _reason(tmp_path / "packed.nii")


@pytest.mark.parametrize("suffix", [".mgz", ".mgh"])
def test_truncated_mgh(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    write_mgh(_volume(LIA, np.float32), path)
    _truncate(path)
    assert _reason(path) == ("the MGH file could not be read: truncated, or not a valid "
                             "FreeSurfer MGH/MGZ file")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_truncated_nrrd_and_metaimage(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    sitk.WriteImage(to_sitk(_volume(LIA)), str(path))
    _truncate(path)
    assert "file could not be read: truncated" in _reason(path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"\0" * 64)
    assert _reason(path).startswith("a .xyz file is not a file the node reads: expected DICOM, "
                                    "NIfTI (.nii, .nii.gz), NRRD")
    with pytest.raises(VolumeError, match="not an image format the node reads"):
        load_image_file(path)


def test_4d_images_with_several_volumes_are_refused_one_volume_is_read(tmp_path):
    four = sitk.JoinSeries([to_sitk(_volume(np.eye(3)))] * 3)
    sitk.WriteImage(four, str(tmp_path / "t.nii.gz"))
    assert "4D image (3 volumes)" in _reason(tmp_path / "t.nii.gz")
    sitk.WriteImage(sitk.JoinSeries([to_sitk(_volume(np.eye(3)))]), str(tmp_path / "one.nrrd"))
    assert load_input(tmp_path / "one.nrrd").array.shape == (5, 6, 7)
    frames = np.zeros((7, 6, 5, 2), np.float32)
    nib.save(nib.MGHImage(frames, np.eye(4)), str(tmp_path / "t.mgz"))
    assert "4D image (2 frames)" in _reason(tmp_path / "t.mgz")


@pytest.mark.parametrize("case", ["text", "truncated", "compressed", "detached", "no raw"])
def test_bad_metaimage_is_one_line_and_nothing_on_stderr(tmp_path, capfd, case):
    """ITK's MetaIO prints its complaints to stderr; the node refuses such files before."""
    volume = _volume(LIA)
    path = tmp_path / ("cut.mhd" if case in ("detached", "no raw") else "cut.mha")
    if case == "text":
        path.write_text("hello\n")
    else:
        sitk.WriteImage(to_sitk(volume), str(path), useCompression=case == "compressed")
    if case in ("truncated", "compressed"):
        _truncate(path, 0.8)
    elif case == "detached":
        _truncate(tmp_path / "cut.raw")
    elif case == "no raw":
        (tmp_path / "cut.raw").unlink()
    reason = _reason(path)
    expected = {"text": "not a valid MetaImage file (no header)",
                "no raw": "its data file (ElementDataFile) is missing"}.get(case, "truncated")
    assert reason.startswith("the MetaImage file could not be read: ") and expected in reason
    assert capfd.readouterr().err == ""


def test_radnode_run_reads_an_nrrd_file(tmp_path, shared_data):
    """`radnode run` takes the same image files: the NIfTI CT, converted to NRRD."""
    import subprocess
    import sys

    from support.tools import REPO

    nrrd = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(shared_data / "ct_abdomen_ts_nifti" / "example_ct.nii.gz")),
                    str(nrrd))
    done = subprocess.run([sys.executable, "-m", "node", "run", str(nrrd), "--model", "lung_ct",
                           "--out", str(tmp_path / "out"), "-c", str(REPO / "config.toml")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "volume (122, 101, 112) at 3 x 3 x 3 mm" in done.stderr
    assert "Left lung:" in done.stdout
