"""run_model on tiny ONNX models: each output kind, layout and run mode, back on the source grid."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from support.onnx_models import (
    const,
    header,
    io,
    label,
    model,
    package,
    pointwise_conv,
    shift_conv,
    two_class_logits,
)

from node.imaging.volume import Volume
from node.inference import SessionRegistry, run_model

RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def registry() -> SessionRegistry:
    return SessionRegistry()


def _volume(shape=(12, 20, 18), seed=0, direction=None, spacing=(1.0, 1.0, 2.0)) -> Volume:
    """Values in [0, 1) (the window in the test manifests maps them onto themselves)."""
    rng = np.random.default_rng(seed)
    direction = np.eye(3) if direction is None else direction
    return Volume(rng.random(shape, dtype=np.float32), spacing, (5.0, -3.0, 12.0), direction)


def _fg(volume: Volume, t: float = 0.5) -> np.ndarray:
    return (volume.array > t).astype(np.uint8)


@pytest.mark.parametrize("direction", [np.eye(3), RAS], ids=["LPS", "RAS"])
def test_3d_softmax_whole_volume(tmp_path, registry, direction):
    toml = header("seg3d", extra_input='orientation = "LPS"') + label(1, "fg")
    pkg = package(tmp_path, "seg3d", toml, two_class_logits())
    vol = _volume(direction=direction)
    out = run_model(pkg, vol, registry)
    assert out.kind == "segmentation" and out.label_map.dtype == np.uint8
    np.testing.assert_array_equal(out.label_map, _fg(vol))
    assert (out.model, out.version, out.provider) == ("seg3d", "0.1", "CPUExecutionProvider")
    assert out.timings.inference > 0 and out.timings.total >= out.timings.inference


@pytest.mark.parametrize(("layout", "axis"), [("NCHW", 1), ("NHWC", -1)])
def test_2d_slicewise_layouts(tmp_path, registry, layout, axis):
    toml = header("seg2d", layout=layout, mode="slicewise", extra_run="batch_size = 5") + label(
        1, "fg")
    pkg = package(tmp_path, "seg2d", toml, two_class_logits(rank=4, channel_axis=axis))
    vol = _volume(shape=(13, 20, 18))  # 13 slices: batches of 5, 5, 3
    out = run_model(pkg, vol, registry)
    np.testing.assert_array_equal(out.label_map, _fg(vol))


def test_2d_resize_to_a_fixed_input_and_back(tmp_path, registry):
    toml = header("resize2d", layout="NCHW", mode="slicewise",
                  extra_input="resize = [40, 36]", extra_run="batch_size = 4") + label(1, "fg")
    onnx_model = two_class_logits(rank=4, in_shape=["N", 1, 40, 36])
    pkg = package(tmp_path, "resize2d", toml, onnx_model)
    vol = _volume(shape=(6, 20, 18))
    _, yy, xx = np.mgrid[0:6, 0:20, 0:18]
    vol.array[:] = ((yy - 9.5) ** 2 + (xx - 8.5) ** 2 <= 36).astype(np.float32) * 0.9
    out = run_model(pkg, vol, registry)
    np.testing.assert_array_equal(out.label_map, _fg(vol))  # 2x up, then back: a smooth disc


def test_sliding_window_matches_whole_volume(tmp_path, registry):
    """A translation-equivariant model gives the same heat map by patches as in one piece."""
    body = header("det_whole", kind="detection", activation="sigmoid") + label(1, "hot")
    whole = package(tmp_path, "det_whole", body, pointwise_conv())
    sliding = header("det_sw", kind="detection", activation="sigmoid", mode="sliding_window",
                     extra_run="patch_size = [6, 8, 8]\noverlap = 0.5\nbatch_size = 3"
                     ) + label(1, "hot")
    sw = package(tmp_path, "det_sw", sliding, pointwise_conv(in_shape=["N", 1, 6, 8, 8]))
    vol = _volume(shape=(13, 21, 19))  # not a multiple of the patch: edge patches overlap more
    a = run_model(whole, vol, registry)
    b = run_model(sw, vol, registry)
    expected = 1 / (1 + np.exp(-(10 * vol.array - 5)))
    np.testing.assert_allclose(a.probability, expected, atol=1e-6)
    np.testing.assert_allclose(b.probability, a.probability, atol=1e-6)  # no patch borders
    np.testing.assert_array_equal(b.label_map, a.label_map)
    np.testing.assert_array_equal(a.label_map, _fg(vol))


def test_sliding_window_pads_a_volume_smaller_than_the_patch(tmp_path, registry):
    toml = header("sw_small", mode="sliding_window",
                  extra_run="patch_size = [16, 16, 16]") + label(1, "fg")
    pkg = package(tmp_path, "sw_small", toml, two_class_logits(in_shape=["N", 1, 16, 16, 16]))
    vol = _volume(shape=(5, 9, 7))
    np.testing.assert_array_equal(run_model(pkg, vol, registry).label_map, _fg(vol))


def test_mirroring_averages_over_flips(tmp_path, registry):
    """y[w] = x[w+1]; mirrored along W it is x[w-1]; the average is (x[w-1] + x[w+1]) / 2."""
    toml = header("mirror", kind="detection", activation="none",
                  extra_run="mirror_axes = [2]", extra_output="threshold = 2.0") + label(1, "m")
    pkg = package(tmp_path, "mirror", toml, shift_conv())
    vol = _volume(shape=(4, 6, 10))
    out = run_model(pkg, vol, registry)
    x = vol.array
    expected = (x[..., :-2] + x[..., 2:]) / 2
    np.testing.assert_allclose(out.probability[..., 1:-1], expected, atol=1e-6)
    no_tta = package(tmp_path, "plain", toml.replace('"mirror"', '"plain"').replace(
        "mirror_axes = [2]", ""), shift_conv())
    np.testing.assert_allclose(run_model(no_tta, vol, registry).probability[..., :-1],
                               x[..., 1:], atol=1e-6)


def test_sigmoid_multi_label_later_labels_win(tmp_path, registry):
    nodes = [
        const("a", 0.3), const("b", 0.7), const("k", 20.0),
        helper.make_node("Sub", ["x", "a"], ["da"]), helper.make_node("Mul", ["da", "k"], ["la"]),
        helper.make_node("Sub", ["x", "b"], ["db"]), helper.make_node("Mul", ["db", "k"], ["lb"]),
        helper.make_node("Concat", ["la", "lb"], ["y"], axis=1),
    ]
    onnx_model = model(nodes, [io("x", ["N", 1, "D", "H", "W"])], [io("y", 5)])
    toml = header("sig", activation="sigmoid") + label(1, "low") + label(
        2, "high", "postprocess = { threshold = 0.5 }")
    pkg = package(tmp_path, "sig", toml, onnx_model)
    vol = _volume()
    out = run_model(pkg, vol, registry)
    expected = np.where(vol.array > 0.7, 2, np.where(vol.array > 0.3, 1, 0))
    np.testing.assert_array_equal(out.label_map, expected)


def test_label_map_output_with_post_processing(tmp_path, registry):
    nodes = [
        const("t", 0.5), const("two", 2.0),
        helper.make_node("Greater", ["x", "t"], ["g"]),
        helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["gf", "two"], ["y2"]),
        helper.make_node("Cast", ["y2"], ["y"], to=TensorProto.UINT8),
    ]
    onnx_model = model(nodes, [io("x", ["N", 1, "D", "H", "W"])],
                       [io("y", ["N", 1, "D", "H", "W"], TensorProto.UINT8)])
    toml = header("lm", activation="labelmap", dtype="uint8") + label(
        2, "cube", "postprocess = { largest_components = 1, fill_holes = true }")
    pkg = package(tmp_path, "lm", toml, onnx_model)
    arr = np.zeros((10, 12, 12), np.float32)
    arr[2:8, 2:9, 2:9] = 0.9  # the big cube, with a hole
    arr[4, 5, 5] = 0.0
    arr[0, 11, 11] = 0.9  # a speck: not the largest component
    vol = Volume(arr, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    out = run_model(pkg, vol, registry)
    expected = np.zeros(arr.shape, np.uint8)
    expected[2:8, 2:9, 2:9] = 2
    np.testing.assert_array_equal(out.label_map, expected)


def test_resampled_model_maps_back_onto_the_source_grid(tmp_path, registry):
    toml = header("coarse", extra_input="spacing = [2.0, 2.0, 2.0]\norientation = \"LPS\"") + \
        label(1, "ball")
    pkg = package(tmp_path, "coarse", toml, two_class_logits())
    zz, yy, xx = np.mgrid[0:40, 0:48, 0:44]
    ball = ((xx - 21) ** 2 + (yy - 25) ** 2 + ((zz - 19) * 1.5) ** 2 <= 14**2)
    vol = Volume(ball.astype(np.float32) * 0.9 + 0.05, (1.0, 1.0, 1.5), (0, 0, 0), RAS)
    out = run_model(pkg, vol, registry)
    assert out.label_map.shape == vol.array.shape
    got = out.label_map.astype(bool)
    assert 2 * (got & ball).sum() / (got.sum() + ball.sum()) > 0.95


def test_classification_probabilities(tmp_path, registry):
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3, 4], keepdims=0),  # (N, 1)
        const("half", 0.5), const("k", 8.0),
        helper.make_node("Sub", ["m", "half"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["z"]),
        helper.make_node("Neg", ["z"], ["nz"]),
        helper.make_node("Concat", ["nz", "z"], ["y"], axis=1),
    ]
    onnx_model = model(nodes, [io("x", ["N", 1, "D", "H", "W"])], [io("y", ["N", 2])])
    toml = header("cls", kind="classification", activation="softmax") + label(
        0, "normal") + label(1, "bright")
    pkg = package(tmp_path, "cls", toml, onnx_model)
    vol = _volume()
    vol.array[:] = 0.75
    out = run_model(pkg, vol, registry)
    p = 1 / (1 + np.exp(-2 * 8 * 0.25))
    assert out.class_probabilities == pytest.approx({0: 1 - p, 1: p}, abs=1e-5)
    assert out.label_map is None


def test_detection_boxes_map_to_source_indices_and_lps(tmp_path, registry):
    boxes = np.array([[[1, 2, 3, 4, 5, 6, 0.9, 0], [0, 0, 0, 1, 1, 1, 0.1, 0]]], np.float32)
    nodes = [const("b", boxes), const("z", 0.0),
             helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Mul", ["s", "z"], ["s0"]),
             helper.make_node("Add", ["b", "s0"], ["y"])]
    onnx_model = model(nodes, [io("x", ["N", 1, "D", "H", "W"])], [io("y", [1, "B", 8])])
    toml = header("box", kind="detection", activation="none",
                  extra_input='orientation = "LPS"', extra_output='format = "boxes"') + label(
        1, "nodule")
    pkg = package(tmp_path, "box", toml, onnx_model)
    vol = _volume(direction=RAS, spacing=(1.0, 1.0, 2.0))
    out = run_model(pkg, vol, registry)
    assert len(out.boxes) == 1
    box = out.boxes[0]
    assert (box.label, box.score) == (1, pytest.approx(0.9))
    ni, nj = vol.shape_ijk[:2]
    # LPS grid = the RAS grid flipped in i and j
    assert box.index_min == pytest.approx((ni - 1 - 4, nj - 1 - 5, 3))
    assert box.index_max == pytest.approx((ni - 1 - 1, nj - 1 - 2, 6))
    corners = vol.index_to_patient(np.array([box.index_min, box.index_max]))
    np.testing.assert_allclose(box.lps_min, corners.min(axis=0), atol=1e-9)
    np.testing.assert_allclose(box.lps_max, corners.max(axis=0), atol=1e-9)


def test_pieces_cut_by_the_edge_and_pieces_touching_a_kept_label():
    """``cut_pieces`` keeps the pieces of an organ that reach the edge of the volume (the field
    of view cut them apart), not a false positive inside; ``keep_touching`` keeps the pieces of
    a label that touch another label, whatever their size."""
    from node.inference.manifest import LabelSpec, PostProcess
    from node.inference.postprocess import _clean_one

    labels = np.zeros((6, 20, 20), np.uint8)
    labels[:, 2:10, 2:10] = 1          # the organ: 384 voxels
    labels[:, 14:20, 2:6] = 1          # a piece cut by the edge (row 19): 144 voxels, 37 %
    labels[2:4, 12:14, 12:14] = 1      # a false positive inside: 8 voxels
    labels[:, 12:14, 17:20] = 1        # a small piece at the edge: 36 voxels, 9 %
    declared = np.array([1, 2])
    organ = LabelSpec(1, "organ", None, None, None, (255, 0, 0),
                      PostProcess(largest_components=1, cut_pieces=0.2))
    out = labels.copy()
    _clean_one(out, organ, declared, 1.0)
    assert (out == 1).sum() == 384 + 144
    assert not out[2:4, 12:14, 12:14].any() and not out[:, 12:14, 17:20].any()

    body = np.zeros((4, 10, 10), np.uint8)
    body[:, :, :4] = 2                 # the body, 160 voxels
    body[:, 5:, 4:6] = 1               # a lung that cuts it in two
    body[:, 5:, 6:] = 2                # the body beyond the lung, 80 voxels
    spec = LabelSpec(2, "body", None, None, None, (0, 0, 255),
                     PostProcess(largest_components=1, keep_touching=(1,)))
    out = body.copy()
    _clean_one(out, spec, declared, 1.0)
    assert (out == body).all()
    alone = body.copy()
    alone[alone == 1] = 0              # without the lung, the far piece is not kept
    alone[:, 5:, 4:6] = 0
    _clean_one(alone, spec, declared, 1.0)
    assert (alone == 2).sum() == 160
