"""``radnode evaluate``: the table and JSON on files written here (NIfTI, NRRD, MGZ, a DICOM SEG),
mappings, and bad input answered with one line and a non-zero status."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from support.tools import REPO

from node.cli import main
from node.imaging.sitk_io import to_sitk
from node.imaging.volume import Volume

GRID = dict(spacing=(1.0, 1.0, 2.0), origin=(-10.0, 5.0, 20.0), direction=np.eye(3))


def write(volume: Volume, path) -> str:
    sitk.WriteImage(to_sitk(volume), str(path))
    return str(path)


@pytest.fixture
def cubes(tmp_path):
    """Label 1: two 6^3 cubes offset 2 voxels along i (Dice 2/3); label 2 only in the prediction;
    reference value 3 only in the reference."""
    pred = Volume(array=np.zeros((20, 20, 20), np.uint8), **GRID)
    ref = Volume(array=np.zeros((20, 20, 20), np.uint16), **GRID)
    pred.array[2:8, 2:8, 2:8] = 1
    ref.array[2:8, 2:8, 4:10] = 1
    pred.array[12:14, 12:14, 12:14] = 2
    ref.array[15:17, 2:4, 2:4] = 3
    return write(pred, tmp_path / "pred.nii.gz"), write(ref, tmp_path / "ref.nrrd")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_table(cubes, capsys):
    code, out, err = run(capsys, *cubes)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["label", "name", "Dice", "IoU", "precision", "recall",
                                "specificity", "pred", "ml", "ref", "ml", "vol", "diff", "%",
                                "HD95", "mm"]
    rows = {line.split()[0]: line.split() for line in lines[2:5]}
    assert rows["1"][1:5] == ["0.667", "0.500", "0.667", "0.667"]
    assert rows["1"][6:9] == ["0.43", "0.43", "+0.0"]  # 216 voxels of 2 mm^3
    assert rows["2"][1:3] == ["0.000", "0.000"] and rows["2"][-1] == "-"
    assert rows["3"][3] == "-"  # precision: nothing predicted
    mean = next(line for line in lines if line.startswith("mean"))
    assert mean.split()[1:5] == ["3", "labels", f"{2 / 3 / 3:.3f}", f"{0.5 / 3:.3f}"]
    assert "note: label 2: absent from the reference (Dice 0, no HD95)" in out


def test_json(cubes, capsys):
    code, out, _ = run(capsys, *cubes, "--json")
    assert code == 0
    data = json.loads(out)
    assert [r["label"] for r in data["labels"]] == [1, 2, 3]
    one = data["labels"][0]
    assert one["dice"] == pytest.approx(2 / 3) and one["jaccard"] == pytest.approx(0.5)
    assert (one["true_positives"], one["false_positives"], one["false_negatives"]) == (144, 72, 72)
    assert one["prediction_ml"] == pytest.approx(0.432)
    assert data["labels"][1]["hd95_mm"] is None
    assert data["mean"]["dice"] == pytest.approx(2 / 9)
    assert data["labels_in_mean"]["hd95_mm"] == 1
    assert data["grid"]["size_ijk"] == [20, 20, 20]
    assert data["grid"]["prediction_resampled"] is False


def test_map_with_names_and_labels(cubes, tmp_path, capsys):
    code, out, _ = run(capsys, *cubes, "--map", "1=1,3:organ; 2=2", "--labels", "1", "--json")
    assert code == 0
    [organ] = json.loads(out)["labels"]
    assert organ["name"] == "organ" and organ["reference_values"] == [1, 3]
    assert organ["false_negatives"] == 72 + 8  # the reference's value 3 joins label 1
    code, out, _ = run(capsys, *cubes, "--map", "1=1,3:organ")
    assert code == 0 and out.splitlines()[2].split()[:2] == ["1=1,3", "organ"]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"1": {"values": [1, 3], "name": "organ"}, "2": 2}))
    code, out, _ = run(capsys, *cubes, "--map-file", str(mapping), "--json")
    assert code == 0
    assert [(r["label"], r["name"]) for r in json.loads(out)["labels"]] == [(1, "organ"), (2, "")]


def test_mgz_prediction_on_another_grid(tmp_path, capsys):
    """A FreeSurfer-style LIA MGZ prediction against an LPS NIfTI reference: the same voxels."""
    ref = Volume(array=np.zeros((12, 14, 16), np.uint8), **GRID)
    ref.array[3:9, 4:10, 5:12] = 17
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.MGHImage(np.transpose(ref.array, (2, 1, 0)).astype(np.int32),
                          lps_to_ras @ ref.affine), str(tmp_path / "aseg.mgz"))
    flipped = tmp_path / "flipped.mgz"
    image = nib.load(str(tmp_path / "aseg.mgz"))
    lia = nib.orientations.ornt_transform(nib.orientations.io_orientation(image.affine),
                                          nib.orientations.axcodes2ornt("LIA"))
    nib.save(image.as_reoriented(lia), str(flipped))
    code, out, err = run(capsys, str(flipped), write(ref, tmp_path / "ref.nii.gz"), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(r["label"], r["dice"]) for r in data["labels"]] == [(17, 1.0)]
    assert data["labels"][0]["hd95_mm"] == 0.0


def test_dicom_seg_reference(tmp_path, capsys):
    """The node's own SEG of two balls against a NIfTI prediction: the SEG's grid holds only
    the slices with segments and runs the other way; names come from the SEG."""
    from support.results import ball_case, ball_label_map, seg_kwargs, segmentation_output

    from node.results import build_segmentation, write_dataset

    folder, paths, volume, sources = ball_case(tmp_path)
    label_map = ball_label_map(volume)
    seg = build_segmentation(sources, segmentation_output(label_map), **seg_kwargs())
    seg_path = write_dataset(seg, folder / "seg.dcm").path
    prediction = volume.with_array(label_map.copy())
    code, out, err = run(capsys, write(prediction, tmp_path / "pred.nii.gz"), str(seg_path),
                         "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(r["label"], r["name"], r["dice"]) for r in data["labels"]] == [
        (1, "Liver", 1.0), (2, "Neoplasm", 1.0)]
    assert data["grid"]["prediction_resampled"] is True  # reoriented exactly
    # A false positive on a slice the SEG does not cover still counts.
    prediction.array[1, 30:32, 30:32] = 2
    code, out, _ = run(capsys, write(prediction, tmp_path / "pred2.nii.gz"), str(seg_path),
                       "--json")
    data = json.loads(out)
    assert data["labels"][1]["false_positives"] == 4
    assert any("outside the reference grid" in note for note in data["notes"])
    code, out, _ = run(capsys, str(seg_path), write(prediction, tmp_path / "pred3.nii.gz"))
    assert code == 0 and "Liver" in out  # a SEG as the prediction names its labels too
    code, _, err = run(capsys, str(paths[0]), str(seg_path))
    assert code == 1
    assert err == f"radnode: the prediction {paths[0]} is a CT object, not a DICOM SEG\n"


@pytest.mark.parametrize(("args", "status", "message"), [
    (["missing.nii.gz", "{ref}"], 1, "radnode: the prediction missing.nii.gz does not exist"),
    (["{pred}", "{ref}", "--map", "1=a"], 2, "radnode: --map '1=a': expected PRED=REF[,REF...]"),
    (["{pred}", "{ref}", "--map", "1=2;1=3"], 2, "radnode: --map: prediction label 1 is mapped"),
    (["{pred}", "{ref}", "--map", "1=2", "--labels", "4"], 2, "radnode: --labels 4: not in the"),
    (["{pred}", "{ref}", "--labels", "x"], 2, "radnode: --labels 'x': 'x' is not an integer"),
    (["{pred}", "{notes}"], 1, "radnode: the reference {notes} is not a label image the node"),
    (["{pred}", "{cut}"], 1, "radnode: cannot read the reference {cut}: the NIfTI file could"),
    (["{probabilities}", "{ref}"], 1, "radnode: the prediction holds non-integer values"),
    (["{pred}", "{pred}", "--map-file", "{notes}"], 2, "radnode: --map-file {notes}: not JSON"),
])
def test_bad_input_is_one_line(cubes, tmp_path, capsys, args, status, message):
    pred, ref = cubes
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(_truncated_nifti(tmp_path))
    probabilities = write(Volume(array=np.full((2, 2, 2), 0.3, np.float32), **GRID),
                          tmp_path / "p.nii.gz")
    fill = dict(pred=pred, ref=ref, notes=notes, cut=cut, probabilities=probabilities)
    code, out, err = run(capsys, *(a.format(**fill) for a in args))
    assert code == status and out == ""
    assert err.startswith(message.format(**fill)) and err.count("\n") == 1, err


def _truncated_nifti(tmp_path) -> bytes:
    path = write(Volume(array=np.ones((9, 9, 9), np.int16), **GRID), tmp_path / "whole.nii.gz")
    with open(path, "rb") as fh:
        data = fh.read()
    return data[: len(data) // 2]


def test_process_prints_no_traceback(cubes, tmp_path):
    """As a user runs it: a real process, one line on stderr, exit status 1 or 2."""
    pred, _ = cubes
    for args, status in (([pred, str(tmp_path / "nothing.mgz")], 1),
                         ([pred, pred, "--map", "=3"], 2)):
        done = subprocess.run([sys.executable, "-m", "node", "evaluate", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == status
        assert done.stderr.startswith("radnode: ") and done.stderr.count("\n") == 1
        assert "Traceback" not in done.stderr
