"""Build models/lung_ct/model.onnx: a classic threshold + flood-fill lung/body algorithm as ONNX.

Not a trained network. Run from the repository root:  python models/lung_ct/build_model.py
(needs the ``onnx`` package). The node feeds HU at 3 mm, reoriented to LPS, so column index i
grows towards the patient's left.

The hard part is telling the air outside the patient from the lungs when the field of view cuts
through the patient: both then touch the image border. Two cues decide, per axial slice:

  body hull  the convex hull of the tissue (HU >= -400, eroded by one voxel so that thin
             things, the table's shell, clothing, cables, do not count) in the slice,
             approximated by the intersection of slabs in 16 directions (a k-DOP). Air outside
             the patient lies outside it; a lung or bowel loop cut by the border lies inside
             it, because the chest or abdominal wall crosses the border on both sides of it.
  pure air   the 3 x 3 in-plane mean (9 mm) below -930 HU. Air outside the patient reads
             -1000 (the foam of a mattress about -955); aerated lung reads above (its 0.1st
             percentile on the real CT here is -888). This keeps lungs that fill a border
             beyond the hull (a field of view inside the chest, where no body outline shows).

Graph, per axial slice:
  air       = HU < -400
  seed      = air on the slice border that is pure air and outside the body hull
  outside   = air connected in-plane to a seed (a flood: repeated 3x3 max-pool within air,
              until nothing changes)
  inside    = not outside                              (the body, with whatever it holds)
  gas       = inside & air & (HU <= -950, or beside such a voxel)
                                                       (bowel gas and its rim, emphysema,
                                                        airways and their walls)
  core      = inside & air & not gas                   (aerated lung tissue)
  undecided = inside & air & outside the body hull     (kept on density alone: no body outline
                                                        shows where it meets the border)
  side      = column index > the midline column  ->  patient left (see _midline)
Outputs, one uint8 value per voxel (1,1,D,H,W):
  labels     1 = core, left   2 = core, right   3 = rest of the body   4 = gas   0 = outside
  undecided  1 where the graph kept air as inside on its density alone, else 0
The manifest's post-processing keeps the largest component per lung and the pieces of it that
the field of view cut apart, lets it absorb the gas it touches (emphysema, airways), fills holes
(vessels), and gives left-over gas to the body; its [[flags]] entry turns ``undecided`` into a
flag on the lungs it overlaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

AIR_HU = -400.0
GAS_HU = -950.0
PURE_AIR_HU = -930.0   # 3 x 3 in-plane mean below this: air (or foam) outside the patient
HULL_DIRECTIONS = 16   # slab directions of the body hull, every 180/16 degrees
HULL_EROSION = 3       # in-plane erosion (voxels) of the tissue the hull is made of
HULL_SLACK = 1.5       # voxels added around the hull: the erosion's depth and half a voxel
BIG = 1.0e6
VALLEY_DEPTH = 0.2     # the profile between two lungs falls below this share of its peak
MAX_ITERATIONS = 4096  # the flood stops as soon as a pass changes nothing


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
    )


def _flood_body() -> onnx.GraphProto:
    """One Loop iteration: grow ``outside`` by one voxel in-plane, within the air mask."""
    nodes = [
        helper.make_node("MaxPool", ["prev"], ["grown"], kernel_shape=[1, 3, 3],
                         pads=[0, 1, 1, 0, 1, 1]),
        helper.make_node("Min", ["grown", "air"], ["next"]),
        helper.make_node("Sub", ["next", "prev"], ["delta"]),
        helper.make_node("ReduceSum", ["delta"], ["changed"], keepdims=0),
        _const("zero_f", 0.0),
        helper.make_node("Greater", ["changed", "zero_f"], ["go_on"]),
    ]
    return helper.make_graph(
        nodes,
        "flood_step",
        [
            helper.make_tensor_value_info("iteration", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("prev", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("go_on", TensorProto.BOOL, []),
            helper.make_tensor_value_info("next", TensorProto.FLOAT, None),
        ],
    )


def _coordinates() -> list[onnx.NodeProto]:
    """``rows`` (1,1,1,H,1) and ``cols`` (1,1,1,1,W): each voxel's j and i as floats, and
    ``border`` (1,1,1,H,W): 1 on the first and last row and column."""
    nodes = [helper.make_node("Shape", ["ct"], ["shape"])]
    for name, axis, shape in (("rows", 3, [1, 1, 1, -1, 1]), ("cols", 4, [1, 1, 1, 1, -1])):
        nodes += [
            _const(f"{name}_axis", [axis], np.int64),
            helper.make_node("Gather", ["shape", f"{name}_axis"], [f"{name}_n"], axis=0),
            helper.make_node("Cast", [f"{name}_n"], [f"{name}_nf"], to=TensorProto.FLOAT),
            helper.make_node("Squeeze", [f"{name}_nf"], [f"{name}_count"]),
            helper.make_node("Range", ["zero", f"{name}_count", "one"], [f"{name}_range"]),
            _const(f"{name}_shape", shape, np.int64),
            helper.make_node("Reshape", [f"{name}_range", f"{name}_shape"], [name]),
            helper.make_node("Sub", [f"{name}_count", "one"], [f"{name}_last"]),
            helper.make_node("Equal", [name, "zero"], [f"{name}_at_0"]),
            helper.make_node("Equal", [name, f"{name}_last"], [f"{name}_at_n"]),
            helper.make_node("Or", [f"{name}_at_0", f"{name}_at_n"], [f"{name}_edge"]),
        ]
    nodes.append(helper.make_node("Or", ["rows_edge", "cols_edge"], ["border_b"]))
    nodes.append(helper.make_node("Cast", ["border_b"], ["border"], to=TensorProto.FLOAT))
    return nodes


def _body_hull() -> list[onnx.NodeProto]:
    """``hull`` (1,1,D,H,W): 1 inside the convex hull of each slice's tissue.

    Only each row's first and last tissue voxel can be a hull vertex, so the slabs are found
    from those (arrays of (D, H)) and the hull comes back as one column interval per row.
    """
    angles = np.pi * np.arange(HULL_DIRECTIONS) / HULL_DIRECTIONS
    angles = angles[np.abs(np.cos(angles)) > 1e-6]  # the row direction is the row range below
    cos = np.cos(angles).reshape(-1, 1, 1, 1, 1)
    sin = np.sin(angles).reshape(-1, 1, 1, 1, 1)
    return [
        _const("hull_cos", cos),
        _const("hull_sin", sin),
        _const("big", BIG),
        _const("slack", HULL_SLACK),
        helper.make_node("ReduceMax", ["tissue"], ["row_has"], axes=[4], keepdims=1),
        helper.make_node("Sub", ["one", "row_has"], ["row_empty"]),
        helper.make_node("Mul", ["row_empty", "big"], ["row_penalty"]),
        helper.make_node("ArgMax", ["tissue"], ["first_i"], axis=4, keepdims=1),
        helper.make_node("ArgMax", ["tissue"], ["last_i"], axis=4, keepdims=1,
                         select_last_index=1),
        helper.make_node("Cast", ["first_i"], ["first"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["last_i"], ["last"], to=TensorProto.FLOAT),
        # each direction's projection of the row ends: (K,1,D,H,1)
        helper.make_node("Mul", ["hull_sin", "rows"], ["row_proj"]),
        helper.make_node("Mul", ["hull_cos", "first"], ["first_c"]),
        helper.make_node("Mul", ["hull_cos", "last"], ["last_c"]),
        helper.make_node("Add", ["first_c", "row_proj"], ["first_p"]),
        helper.make_node("Add", ["last_c", "row_proj"], ["last_p"]),
        helper.make_node("Min", ["first_p", "last_p"], ["low_p"]),
        helper.make_node("Max", ["first_p", "last_p"], ["high_p"]),
        helper.make_node("Add", ["low_p", "row_penalty"], ["low_masked"]),
        helper.make_node("Sub", ["high_p", "row_penalty"], ["high_masked"]),
        helper.make_node("ReduceMin", ["low_masked"], ["slab_low"], axes=[3], keepdims=1),
        helper.make_node("ReduceMax", ["high_masked"], ["slab_high"], axes=[3], keepdims=1),
        # each slab as a column interval per row, intersected over the directions
        helper.make_node("Sub", ["slab_low", "row_proj"], ["low_rest"]),
        helper.make_node("Sub", ["slab_high", "row_proj"], ["high_rest"]),
        helper.make_node("Div", ["low_rest", "hull_cos"], ["bound_a"]),
        helper.make_node("Div", ["high_rest", "hull_cos"], ["bound_b"]),
        helper.make_node("Min", ["bound_a", "bound_b"], ["col_low_k"]),
        helper.make_node("Max", ["bound_a", "bound_b"], ["col_high_k"]),
        helper.make_node("ReduceMax", ["col_low_k"], ["col_low"], axes=[0], keepdims=1),
        helper.make_node("ReduceMin", ["col_high_k"], ["col_high"], axes=[0], keepdims=1),
        # and the range of rows holding tissue
        helper.make_node("Add", ["rows", "row_penalty"], ["rows_low_masked"]),
        helper.make_node("Sub", ["rows", "row_penalty"], ["rows_high_masked"]),
        helper.make_node("ReduceMin", ["rows_low_masked"], ["row_low"], axes=[3], keepdims=1),
        helper.make_node("ReduceMax", ["rows_high_masked"], ["row_high"], axes=[3], keepdims=1),
        helper.make_node("Sub", ["col_low", "slack"], ["col_from"]),
        helper.make_node("Add", ["col_high", "slack"], ["col_to"]),
        helper.make_node("Sub", ["row_low", "slack"], ["row_from"]),
        helper.make_node("Add", ["row_high", "slack"], ["row_to"]),
        helper.make_node("GreaterOrEqual", ["cols", "col_from"], ["in_c0"]),
        helper.make_node("LessOrEqual", ["cols", "col_to"], ["in_c1"]),
        helper.make_node("GreaterOrEqual", ["rows", "row_from"], ["in_r0"]),
        helper.make_node("LessOrEqual", ["rows", "row_to"], ["in_r1"]),
        helper.make_node("And", ["in_c0", "in_c1"], ["in_c"]),
        helper.make_node("And", ["in_r0", "in_r1"], ["in_r"]),
        helper.make_node("And", ["in_c", "in_r"], ["hull_b"]),
        helper.make_node("Cast", ["hull_b"], ["hull"], to=TensorProto.FLOAT),
    ]


def _midline() -> list[onnx.NodeProto]:
    """``midline``: the column between the lungs (the mediastinum and spine), found as the
    middle of the lowest run of the lung-tissue column profile in the middle half of its
    extent; the body's centroid column where that run is not deep (one lung in view).

    A field of view that cuts one side shortens the profile but leaves the valley where it
    is, while the centroid of the body left in view moves by half the cut."""
    return [
        # the body's centroid column
        helper.make_node("Mul", ["inside", "cols"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted"], ["sum_w"], keepdims=0),
        helper.make_node("ReduceSum", ["inside"], ["sum_1"], keepdims=0),
        helper.make_node("Max", ["sum_1", "one"], ["sum_1_safe"]),
        helper.make_node("Div", ["sum_w", "sum_1_safe"], ["centroid"]),
        # the profile: lung tissue per column, smoothed over 5 columns (15 mm); the core is
        # eroded by a voxel first, so that the thin rims and mottled stool of the bowel,
        # spread over every column of an abdomen, leave the lungs' humps standing out
        helper.make_node("Neg", ["core"], ["core_neg"]),
        helper.make_node("MaxPool", ["core_neg"], ["core_eroded_neg"], kernel_shape=[1, 3, 3],
                         pads=[0, 1, 1, 0, 1, 1]),
        helper.make_node("Neg", ["core_eroded_neg"], ["core_eroded"]),
        _const("profile_axes", [0, 1, 2, 3], np.int64),
        helper.make_node("ReduceSum", ["core_eroded", "profile_axes"], ["profile_raw"],
                         keepdims=1),
        _const("profile_shape", [1, 1, -1], np.int64),
        helper.make_node("Reshape", ["profile_raw", "profile_shape"], ["profile_3"]),
        helper.make_node("AveragePool", ["profile_3"], ["profile_s"], kernel_shape=[5],
                         pads=[2, 2], count_include_pad=0),
        _const("flat", [-1], np.int64),
        helper.make_node("Reshape", ["profile_s", "flat"], ["profile"]),
        helper.make_node("Reshape", ["cols", "flat"], ["col_index"]),
        # the valley: the lowest run of the profile in the middle half of its extent
        helper.make_node("Greater", ["profile", "zero"], ["has_lung_b"]),
        helper.make_node("Cast", ["has_lung_b"], ["has_lung"], to=TensorProto.FLOAT),
        helper.make_node("ArgMax", ["has_lung"], ["lung_first_i"], axis=0, keepdims=1),
        helper.make_node("ArgMax", ["has_lung"], ["lung_last_i"], axis=0, keepdims=1,
                         select_last_index=1),
        helper.make_node("Cast", ["lung_first_i"], ["lung_first"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["lung_last_i"], ["lung_last"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["lung_last", "lung_first"], ["lung_extent"]),
        _const("quarter", 0.25),
        helper.make_node("Mul", ["lung_extent", "quarter"], ["extent_quarter"]),
        helper.make_node("Add", ["lung_first", "extent_quarter"], ["window_from"]),
        helper.make_node("Sub", ["lung_last", "extent_quarter"], ["window_to"]),
        helper.make_node("GreaterOrEqual", ["col_index", "window_from"], ["after_from"]),
        helper.make_node("LessOrEqual", ["col_index", "window_to"], ["before_to"]),
        helper.make_node("And", ["after_from", "before_to"], ["window_b"]),
        helper.make_node("Cast", ["window_b"], ["window"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "window"], ["not_window"]),
        helper.make_node("Mul", ["not_window", "big"], ["not_window_big"]),
        helper.make_node("Add", ["profile", "not_window_big"], ["valley_profile"]),
        helper.make_node("ArgMin", ["valley_profile"], ["valley_first_i"], axis=0, keepdims=1),
        helper.make_node("ArgMin", ["valley_profile"], ["valley_last_i"], axis=0, keepdims=1,
                         select_last_index=1),
        helper.make_node("Gather", ["profile", "valley_first_i"], ["valley_height"], axis=0),
        helper.make_node("Cast", ["valley_first_i"], ["valley_first"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["valley_last_i"], ["valley_last"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["valley_first", "valley_last"], ["valley_sum"]),
        _const("half", 0.5),
        helper.make_node("Mul", ["valley_sum", "half"], ["valley"]),
        # two lungs: the valley is deep (below a fifth of the profile's peak)
        helper.make_node("ReduceMax", ["profile"], ["peak"], keepdims=1),
        _const("valley_depth", VALLEY_DEPTH),
        helper.make_node("Mul", ["peak", "valley_depth"], ["deep_enough"]),
        helper.make_node("LessOrEqual", ["valley_height", "deep_enough"], ["deep_b"]),
        helper.make_node("Greater", ["peak", "zero"], ["any_lung_b"]),
        helper.make_node("And", ["deep_b", "any_lung_b"], ["two_lungs_b"]),
        helper.make_node("Where", ["two_lungs_b", "valley", "centroid"], ["midline_1"]),
        _const("scalar", [], np.int64),
        helper.make_node("Reshape", ["midline_1", "scalar"], ["midline"]),
    ]


def build() -> onnx.ModelProto:
    nodes = [
        _const("air_hu", AIR_HU),
        _const("gas_hu", GAS_HU),
        _const("pure_hu", PURE_AIR_HU),
        _const("one", 1.0),
        _const("zero", 0.0),
        _const("max_iter", MAX_ITERATIONS, np.int64),
        _const("true", True, np.bool_),
        helper.make_node("Less", ["ct", "air_hu"], ["air_b"]),
        helper.make_node("Cast", ["air_b"], ["air"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "air"], ["tissue_all"]),
        # thin tissue (the table's shell, clothing, cables) does not make the body hull
        helper.make_node("Neg", ["tissue_all"], ["tissue_neg"]),
        helper.make_node("MaxPool", ["tissue_neg"], ["eroded_neg"],
                         kernel_shape=[1, HULL_EROSION, HULL_EROSION],
                         pads=[0, HULL_EROSION // 2, HULL_EROSION // 2] * 2),
        helper.make_node("Neg", ["eroded_neg"], ["tissue"]),
        *_coordinates(),
        *_body_hull(),
        # pure air: the in-plane 3 x 3 mean
        helper.make_node("AveragePool", ["ct"], ["local_mean"], kernel_shape=[1, 3, 3],
                         pads=[0, 1, 1, 0, 1, 1], count_include_pad=0),
        helper.make_node("Less", ["local_mean", "pure_hu"], ["pure_b"]),
        helper.make_node("Cast", ["pure_b"], ["pure"], to=TensorProto.FLOAT),
        # seeds: pure air on the border, outside the body hull; flood within air
        helper.make_node("Sub", ["one", "hull"], ["beyond_hull"]),
        helper.make_node("Mul", ["air", "pure"], ["pure_air"]),
        helper.make_node("Mul", ["pure_air", "beyond_hull"], ["pure_beyond"]),
        helper.make_node("Mul", ["pure_beyond", "border"], ["seed"]),
        helper.make_node("Loop", ["max_iter", "true", "seed"], ["outside"],
                         body=_flood_body()),
        helper.make_node("Sub", ["one", "outside"], ["inside"]),
        # aerated tissue versus gas, inside the body
        helper.make_node("Greater", ["ct", "gas_hu"], ["above_gas_b"]),
        helper.make_node("Cast", ["above_gas_b"], ["above_gas"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["inside", "air"], ["inside_air"]),
        # a voxel beside gas is the rim of a bowel loop or an airway: gas too (a lung takes
        # the gas it touches back; a bowel loop's rim no longer passes for lung)
        helper.make_node("Sub", ["one", "above_gas"], ["below_gas"]),
        helper.make_node("MaxPool", ["below_gas"], ["near_gas"], kernel_shape=[1, 3, 3],
                         pads=[0, 1, 1, 0, 1, 1]),
        helper.make_node("Sub", ["one", "near_gas"], ["clear_of_gas"]),
        helper.make_node("Mul", ["inside_air", "clear_of_gas"], ["core"]),
        helper.make_node("Sub", ["inside_air", "core"], ["gas"]),
        helper.make_node("Mul", ["inside_air", "beyond_hull"], ["undecided_f"]),
        helper.make_node("Cast", ["undecided_f"], ["undecided"], to=TensorProto.UINT8),
        *_midline(),
        helper.make_node("Greater", ["cols", "midline"], ["left_b"]),
        helper.make_node("Cast", ["left_b"], ["left"], to=TensorProto.FLOAT),
        # label = 3*inside + core*(left*1 + (1-left)*2 - 3) + gas*(4-3)
        #       = 3*inside + core*(-1 - left) + gas
        _const("three", 3.0),
        _const("minus_one", -1.0),
        helper.make_node("Mul", ["inside", "three"], ["body3"]),
        helper.make_node("Sub", ["minus_one", "left"], ["core_shift"]),
        helper.make_node("Mul", ["core", "core_shift"], ["core_term"]),
        helper.make_node("Add", ["body3", "core_term"], ["partial"]),
        helper.make_node("Add", ["partial", "gas"], ["label_f"]),
        helper.make_node("Cast", ["label_f"], ["labels"], to=TensorProto.UINT8),
    ]
    spatial = [1, 1, "D", "H", "W"]
    graph = helper.make_graph(
        nodes,
        "lung_ct_threshold",
        [helper.make_tensor_value_info("ct", TensorProto.FLOAT, spatial)],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, spatial),
         helper.make_tensor_value_info("undecided", TensorProto.UINT8, spatial)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="radnode models/lung_ct/build_model.py",
        doc_string="Threshold + flood-fill lung/body segmentation; not a trained network.",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    out = Path(__file__).with_name("model.onnx")
    onnx.save(build(), out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
