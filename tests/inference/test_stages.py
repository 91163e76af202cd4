"""Several stages, crops, conformed grids, statistics, union post-processing, left/right split,
slice-wise combining: the manifest features real brain models need, on tiny ONNX models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from support.onnx_models import const, io, model, two_class_logits

from node.imaging.resample import conform_grid, nearest_exact_indices, orientation_code
from node.imaging.volume import Volume
from node.inference import SessionRegistry, run_model
from node.inference.manifest import InputSpec, Normalization, load_package
from node.inference.midline import midsagittal_plane
from node.inference.preprocess import normalize, robust_range
from node.inference.stages import pad_to_multiple
from node.pipeline import run_pipeline

HEAD = """
version = "0.1"
description = "test model"
licence = "MIT"
intended_use = "tests"
for_clinical_use = false
[accepts]
modality = ["MR"]
"""
WINDOW = 'normalize = { kind = "window", center = 0.5, width = 1.0 }'


@pytest.fixture(scope="module")
def registry() -> SessionRegistry:
    return SessionRegistry()


def write_package(tmp_path, name: str, toml: str, graphs: dict[str, onnx.ModelProto],
                  top: str = ""):
    """A package folder; ``top`` holds top-level keys (they must precede the tables)."""
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    text = f'name = "{name}"\n{top}\n' + HEAD + "\n".join(
        line.strip() for line in toml.splitlines())
    (folder / "model.toml").write_text(text + "\n", encoding="utf-8")
    for file, graph in graphs.items():
        onnx.save(graph, folder / file)
    return load_package(folder)


def identity_labelmap() -> onnx.ModelProto:
    """The input, unchanged, as a label map."""
    return model([helper.make_node("Identity", ["x"], ["y"])],
                 [io("x", ["N", 1, "D", "H", "W"])], [io("y", 5)])


def test_nearest_exact_indices_are_torchs():
    """Values printed by torch 2.13 ``interpolate(mode="nearest-exact")``."""
    assert nearest_exact_indices(5, 3).tolist() == [0, 2, 4]
    assert nearest_exact_indices(7, 12).tolist() == [0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 6, 6]
    assert nearest_exact_indices(128, 41)[:8].tolist() == [1, 4, 7, 10, 14, 17, 20, 23]
    assert nearest_exact_indices(256, 150)[:10].tolist() == [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    assert nearest_exact_indices(4, 166)[41] == 1  # exact ties where torch's floats land on 1
    assert nearest_exact_indices(8, 188)[23] == 1


def test_conform_grid_is_freesurfers():
    """256^3 of 1 mm, LIA, voxel 128 at the source's voxel shape/2 (FreeSurfer's c_ras)."""
    source = Volume(np.zeros((190, 256, 188), np.float32), (0.88, 0.88, 0.88), (90.0, 120.0, -70.0),
                    np.diag([-1.0, -1.0, 1.0]))  # RAS
    grid = conform_grid(source, (256, 256, 256), (1.0, 1.0, 1.0), "LIA")
    assert orientation_code(grid.direction) == "LIA"
    np.testing.assert_allclose(grid.index_to_patient(np.array([128.0, 128, 128])),
                               source.index_to_patient(np.array([94.0, 128, 95])), atol=1e-9)


def test_two_stages_crop_to_the_first_stage_mask_resize_and_paste_back(tmp_path, registry):
    """Stage 1 finds the bright region (largest component only); stage 2 runs on its box,
    resized to 16^3, and its labels come back to exactly the source voxels, nothing outside."""
    toml = f"""
    [[stages]]
    name = "locate"
    file = "locate.onnx"
    [stages.input]
    name = "x"
    layout = "NCDHW"
    {WINDOW}
    [stages.output]
    name = "y"
    kind = "segmentation"
    [stages.mask]
    channel = 1
    largest_component = true
    [[stages]]
    name = "fine"
    file = "fine.onnx"
    [stages.input]
    name = "x"
    layout = "NCDHW"
    {WINDOW}
    [stages.crop]
    source = "locate"
    margin = 1
    resize = [16, 16, 16]
    [stages.output]
    name = "y"
    kind = "segmentation"
    [[labels]]
    value = 1
    name = "core"
    """
    pkg = write_package(tmp_path, "twostage", toml, {
        "locate.onnx": two_class_logits(threshold=0.3),
        "fine.onnx": two_class_logits(threshold=0.7)})
    a = np.full((20, 24, 22), 0.1, np.float32)
    a[5:13, 6:15, 4:14] = 0.5   # found by stage 1 (> 0.3), not by stage 2 (> 0.7)
    a[7:11, 8:12, 6:11] = 0.9   # the core
    a[18, 2, 20] = 0.95         # bright but outside the largest component: never cropped to
    vol = Volume(a, (1.0, 1.2, 2.0), (3.0, -4.0, 7.0))
    out = run_model(pkg, vol, registry)
    expected = np.zeros(a.shape, np.uint8)
    expected[7:11, 8:12, 6:11] = 1
    np.testing.assert_array_equal(out.label_map, expected)
    assert [lab.name for lab in out.labels] == ["core"]


def test_a_model_after_another_crops_to_and_stays_within_its_mask(tmp_path, registry):
    first = write_package(tmp_path, "first", f"""
    [input]
    name = "x"
    layout = "NCDHW"
    {WINDOW}
    [output]
    name = "y"
    kind = "segmentation"
    [[labels]]
    value = 1
    name = "region"
    """, {"model.onnx": two_class_logits(threshold=0.6)})
    second = write_package(tmp_path, "second", f"""
    [input]
    name = "x"
    layout = "NCDHW"
    {WINDOW}
    [crop]
    source = "first"
    margin = 2
    [output]
    name = "y"
    kind = "segmentation"
    [postprocess]
    within = "first"
    [[labels]]
    value = 1
    name = "part"
    [[totals]]
    name = "Region"
    from_after = true
    [[measurements]]
    kind = "volume_percent"
    of = "Region"
    name = "percent"
    """, {"model.onnx": two_class_logits(threshold=0.4)}, top='after = "first"')
    a = np.full((10, 12, 14), 0.1, np.float32)
    a[2:8, 3:9, 3:9] = 0.5      # the second model's own threshold only
    a[3:6, 4:7, 4:8] = 0.8      # inside the first model's mask too
    vol = Volume(a, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    out = run_model(second, vol, registry)
    assert out.after is not None and out.after.model == "first"
    np.testing.assert_array_equal(out.label_map, (a > 0.6).astype(np.uint8))
    result = run_pipeline(vol, second, tmp_path / "out", registry=registry)
    assert result.totals["Region"].volume_ml == pytest.approx(36 / 1000)
    assert result.regions[1].value("percent") == pytest.approx(100.0)
    assert first.name == "first"


def test_union_largest_component_by_connectivity_and_hole_filling(tmp_path, registry):
    a = np.zeros((9, 9, 9), np.float32)
    a[1:4, 1:4, 1:4] = 1            # the big part
    a[4, 4, 4] = 2                  # touches the big part by a corner only
    a[6:9, 6:9, 6:9] = 1
    a[7, 7, 7] = 0                  # a hole in the second cube
    vol = Volume(a, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))

    def run(name: str, connectivity: int) -> np.ndarray:
        pkg = write_package(tmp_path, name, f"""
        [input]
        name = "x"
        layout = "NCDHW"
        [output]
        name = "y"
        kind = "segmentation"
        activation = "labelmap"
        map_back = "nearest"
        [postprocess]
        largest_component = true
        connectivity = {connectivity}
        fill_holes = true
        [[labels]]
        value = 1
        name = "one"
        [[labels]]
        value = 2
        name = "two"
        """, {"model.onnx": identity_labelmap()})
        return run_model(pkg, vol, registry).label_map

    faces = run("faces", 6)
    assert faces[4, 4, 4] == 0 and faces[6:9, 6:9, 6:9].sum() == 0 and faces[1:4, 1:4, 1:4].all()
    a[6:9, 6:9, 6:9] = 0
    a[1:4, 1:4, 1:4] = 1
    a[2, 2, 2] = 0                  # a hole in the kept part joins the first label
    corners = run("corners", 26)
    assert corners[4, 4, 4] == 2 and corners[2, 2, 2] == 1


@pytest.mark.parametrize("degrees", [0.0, 12.0])
def test_paired_labels_split_at_the_mid_sagittal_plane(tmp_path, registry, degrees):
    """A symmetric 'brain' (ellipsoid) with a paired structure on each side; the head turned
    about the S axis: each blob gets the value of the side of the patient it is on."""
    n = 40
    k, j, i = np.mgrid[0:n, 0:n, 0:n].astype(np.float64)
    brain = ((i - 19.5) / 16) ** 2 + ((j - 19.5) / 12) ** 2 + ((k - 19.5) / 10) ** 2 <= 1
    a = brain.astype(np.float32)
    a[17:23, 17:23, 8:13] = 2       # low i
    a[17:23, 17:23, 27:32] = 2      # high i
    a[18:22, 30:33, 18:22] = 3      # on the midline: not paired, relabelled
    t = np.radians(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    vol = Volume(a, (1.0, 1.0, 1.0), (-20.0, -20.0, -20.0), rot @ np.diag([-1.0, 1.0, 1.0]))
    pkg = write_package(tmp_path, f"split{int(degrees)}", """
    [input]
    name = "x"
    layout = "NCDHW"
    [output]
    name = "y"
    kind = "segmentation"
    activation = "labelmap"
    map_back = "nearest"
    [[labels]]
    value = 1
    name = "Tissue"
    [[labels]]
    value = 2
    name = "Nucleus"
    split = { left = 20, right = 30 }
    [[labels]]
    value = 3
    name = "Midline"
    reported_value = 9
    """, {"model.onnx": identity_labelmap()})
    out = run_model(pkg, vol, registry)
    # i points towards patient right (direction column 0 is -x, turned): low i is patient left.
    assert set(np.unique(out.label_map[17:23, 17:23, 8:13])) == {20}
    assert set(np.unique(out.label_map[17:23, 17:23, 27:32])) == {30}
    assert set(np.unique(out.label_map[18:22, 30:33, 18:22])) == {9}
    assert [lab.name for lab in out.labels] == ["Tissue", "Left nucleus", "Right nucleus",
                                                "Midline"]
    assert out.labels[1].laterality.value == "7771000"  # SCT Left
    a_, b_, c_ = midsagittal_plane(brain, vol)
    centre = vol.index_to_patient(np.array([19.5, 19.5, 19.5]))
    assert a_ + b_ * centre[1] + c_ * centre[2] == pytest.approx(centre[0], abs=0.6)


def test_statistics_from_another_stage_and_chained_steps():
    spec = InputSpec("x", normalize=(Normalization(
        "percentile", {"low": 0.0, "high": 100.0}, "stage:a",
        (Normalization("scale", {"factor": 2.0, "offset": 1.0}),)),))
    crop = np.array([[[2.0, 4.0]]], np.float32)
    whole = np.array([[[0.0, 8.0]]], np.float32)
    out = normalize(crop, spec, {"stage:a": whole})
    np.testing.assert_allclose(out[0], [[[1.5, 2.0]]])  # (x - 0) / 8, then * 2 + 1
    with pytest.raises(RuntimeError, match="not available"):
        normalize(crop, spec, {})


def test_robust_range_ignores_the_brightest_thousandth():
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 100, 200_000).astype(np.float32)
    data[:100] = 10_000  # 0.05 % outliers
    low, scale = robust_range(data, 0.0, 0.999, 1000, 255.0)
    assert low == pytest.approx(1.0, abs=1e-3)
    assert 255 / scale < 200  # the range stops well below the outliers


def test_pad_to_a_multiple_and_back(tmp_path, registry):
    x = np.arange(2 * 5 * 6 * 7, dtype=np.float32).reshape(2, 5, 6, 7)
    padded, spatial = pad_to_multiple(x, 4)
    assert padded.shape == (2, 8, 8, 8) and spatial == (5, 6, 7)
    np.testing.assert_array_equal(padded[:, :5, :6, :7], x)
    pkg = write_package(tmp_path, "padded", f"""
    [input]
    name = "x"
    layout = "NCDHW"
    pad_multiple = 8
    {WINDOW}
    [output]
    name = "y"
    kind = "segmentation"
    [[labels]]
    value = 1
    name = "fg"
    """, {"model.onnx": two_class_logits()})
    vol = Volume(np.random.default_rng(1).random((13, 21, 19), dtype=np.float32), (1, 1, 1),
                 (0, 0, 0))
    np.testing.assert_array_equal(run_model(pkg, vol, registry).label_map,
                                  (vol.array > 0.5).astype(np.uint8))


@pytest.mark.parametrize(("combine", "expected"), [
    ("mean", 0.5), ("max", 0.9), ("top_k_mean", 0.7)])
def test_slicewise_classification_combines_slices(tmp_path, registry, combine, expected):
    """Class 1's probability is the slice's mean intensity; slices of 0.1, 0.5, 0.9."""
    graph = model([
        helper.make_node("GlobalAveragePool", ["x"], ["m"]),
        helper.make_node("Flatten", ["m"], ["p"]),
        const("one", 1.0),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["y"], axis=1),
    ], [io("x", ["N", 1, "H", "W"])], [io("y", 2)])
    top_k = "top_k = 2" if combine == "top_k_mean" else ""
    pkg = write_package(tmp_path, f"cls_{combine}", f"""
    [input]
    name = "x"
    layout = "NCHW"
    [run]
    mode = "slicewise"
    combine = "{combine}"
    {top_k}
    [output]
    name = "y"
    kind = "classification"
    activation = "none"
    [[labels]]
    value = 1
    name = "bright"
    """, {"model.onnx": graph})
    a = np.stack([np.full((4, 5), v, np.float32) for v in (0.1, 0.5, 0.9)])
    out = run_model(pkg, Volume(a, (1, 1, 1), (0, 0, 0)), registry)
    assert out.class_probabilities[1] == pytest.approx(expected)
    np.testing.assert_allclose(out.slice_probabilities[:, 0], [0.1, 0.5, 0.9], atol=1e-6)
    summary = run_pipeline(Volume(a, (1, 1, 1), (0, 0, 0)), pkg, tmp_path / "out",
                           registry=registry).summary()
    assert summary["slice_probabilities"]["bright"] == pytest.approx([0.1, 0.5, 0.9], abs=1e-5)




@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["stages"][1]["crop"].update(source="nowhere"),
     "stages[1].crop.source: must be one of threshold, locate"),
    (lambda r: r["stages"][1]["input"]["normalize"].update(statistics="stage:later"),
     "stages[1].input.normalize.statistics: must be one of"),
    (lambda r: r["stages"][1].update(mask={"channel": 1}),
     "stages[1].mask: only for earlier stages"),
    (lambda r: r["stages"][0]["input"].update(conform={"size": [8, 8, 8]}),
     "stages[0].input.conform: replaces spacing, orientation and resize"),
    (lambda r: r.update(input={"name": "x", "layout": "NCDHW"}),
     "input: with [[stages]], each stage has its own"),
    (lambda r: r["labels"][0].update(split={"left": 1, "right": 1}),
     "labels[0].split: each reported value must be its own"),
    (lambda r: r["measurements"].append({"kind": "volume_percent", "of": "Nothing"}),
     "measurements[1].of: must name one of the [[totals]]"),
])
def test_manifest_errors_of_the_new_keys_name_the_key(change, message):
    import copy
    import tomllib
    from pathlib import Path

    from node.inference.manifest import ManifestError, parse_manifest

    path = Path(__file__).resolve().parents[2] / "models" / "brain_extraction_t1" / "model.toml"
    raw = copy.deepcopy(tomllib.loads(path.read_text(encoding="utf-8")))
    change(raw)
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(raw, path)


def test_resample_inside_is_trilinear_inside_and_zero_outside():
    """niivue's conform sampling: a linear ramp is reproduced exactly where all eight
    neighbours exist; a point needing a neighbour beyond the last voxel gets 0."""
    from node.imaging.resample import resample_inside

    k, j, i = np.mgrid[0:6, 0:7, 0:8].astype(np.float32)
    source = Volume(2 * i + 3 * j + 5 * k + 1, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    grid = Volume(np.zeros((1, 1, 1), np.float32), (1.0, 1.0, 1.0), (0.25, 0.5, 0.75))
    out = resample_inside(source, grid, (8, 7, 6)).array
    kk, jj, ii = np.mgrid[0:6, 0:7, 0:8].astype(np.float64)
    expected = 2 * (ii + 0.25) + 3 * (jj + 0.5) + 5 * (kk + 0.75) + 1
    inside = (ii + 0.25 <= 7) & (jj + 0.5 <= 6) & (kk + 0.75 <= 5)
    np.testing.assert_allclose(out[inside], expected[inside], rtol=1e-6)
    assert not out[~inside].any()


def test_a_threshold_crop_stays_within_another_masks_box():
    from node.inference.manifest import CropSpec
    from node.inference.stages import crop_box

    a = np.zeros((20, 20, 20), np.float32)
    a[2:18, 3:17, 4:16] = 1.0                      # bright head
    grid = Volume(a, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    brain = grid.with_array(np.zeros_like(a, dtype=np.uint8))
    brain.array[8:12, 9:11, 7:13] = 1
    spec = CropSpec(source="threshold", fraction=0.5, within="brain", within_margin=2)
    assert crop_box(spec, grid, {"brain": brain}) == (slice(6, 14), slice(7, 13), slice(5, 15))
    wide = CropSpec(source="threshold", fraction=0.5)
    assert crop_box(wide, grid, {}) == (slice(2, 18), slice(3, 17), slice(4, 16))
