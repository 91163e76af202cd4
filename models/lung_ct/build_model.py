"""Build models/lung_ct/model.onnx: a classic threshold + flood-fill lung/body algorithm as ONNX.

Not a trained network. Run from the repository root:  python models/lung_ct/build_model.py
(needs the ``onnx`` package). The node feeds HU at 3 mm, reoriented to LPS, so column index i
grows towards the patient's left.

Graph, per axial slice where it matters:
  air      = HU < -400
  outside  = air connected to the slice border (a flood fill: repeated 3x3 max-pool within air,
             until nothing changes; a frame of air is padded around each slice as the seed)
  inside   = not outside                              (the body, with whatever it holds)
  core     = inside & air & HU > -950                 (aerated lung tissue, also gas rims)
  gas      = inside & air & HU <= -950                (bowel gas, emphysema, trachea)
  side     = column index > body centroid column  ->  patient left
Output, one uint8 value per voxel (1,1,D,H,W):
  1 = core, left   2 = core, right   3 = rest of the body   4 = gas   0 = outside
The manifest's post-processing keeps the largest component per lung, lets it absorb the gas it
touches (emphysema, airways), fills holes (vessels), and gives left-over gas to the body.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

AIR_HU = -400.0
GAS_HU = -950.0
MAX_ITERATIONS = 4096  # the flood stops as soon as a pass changes nothing


def _const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
    )


def _flood_body() -> onnx.GraphProto:
    """One Loop iteration: grow ``outside`` by one voxel in-plane, within the padded air mask."""
    nodes = [
        helper.make_node("MaxPool", ["prev"], ["grown"], kernel_shape=[1, 3, 3],
                         pads=[0, 1, 1, 0, 1, 1]),
        helper.make_node("Min", ["grown", "air_padded"], ["next"]),
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


def build() -> onnx.ModelProto:
    pads = [0, 0, 0, 1, 1, 0, 0, 0, 1, 1]  # one voxel around each slice (H and W)
    nodes = [
        _const("air_hu", AIR_HU),
        _const("gas_hu", GAS_HU),
        _const("one", 1.0),
        _const("zero", 0.0),
        _const("pads", pads, np.int64),
        _const("max_iter", MAX_ITERATIONS, np.int64),
        _const("true", True, np.bool_),
        # air and its padded frame (the flood's seed)
        helper.make_node("Less", ["ct", "air_hu"], ["air_b"]),
        helper.make_node("Cast", ["air_b"], ["air"], to=TensorProto.FLOAT),
        helper.make_node("Pad", ["air", "pads", "one"], ["air_padded"], mode="constant"),
        helper.make_node("Mul", ["air", "zero"], ["zeros"]),
        helper.make_node("Pad", ["zeros", "pads", "one"], ["seed"], mode="constant"),
        helper.make_node("Loop", ["max_iter", "true", "seed"], ["outside_padded"],
                         body=_flood_body()),
        # crop the frame off again
        _const("starts", [1, 1], np.int64),
        _const("ends", [-1, -1], np.int64),
        _const("axes", [3, 4], np.int64),
        helper.make_node("Slice", ["outside_padded", "starts", "ends", "axes"], ["outside"]),
        helper.make_node("Sub", ["one", "outside"], ["inside"]),
        # aerated tissue versus gas, inside the body
        helper.make_node("Greater", ["ct", "gas_hu"], ["above_gas_b"]),
        helper.make_node("Cast", ["above_gas_b"], ["above_gas"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["inside", "air"], ["inside_air"]),
        helper.make_node("Mul", ["inside_air", "above_gas"], ["core"]),
        helper.make_node("Sub", ["inside_air", "core"], ["gas"]),
        # column index and the body's centroid column
        helper.make_node("Shape", ["ct"], ["shape"]),
        _const("w_axis", [4], np.int64),
        helper.make_node("Gather", ["shape", "w_axis"], ["width"], axis=0),
        helper.make_node("Cast", ["width"], ["width_f"], to=TensorProto.FLOAT),
        helper.make_node("Squeeze", ["width_f"], ["width_s"]),
        helper.make_node("Range", ["zero", "width_s", "one"], ["columns"]),
        _const("col_shape", [1, 1, 1, 1, -1], np.int64),
        helper.make_node("Reshape", ["columns", "col_shape"], ["column"]),
        helper.make_node("Mul", ["inside", "column"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted"], ["sum_w"], keepdims=0),
        helper.make_node("ReduceSum", ["inside"], ["sum_1"], keepdims=0),
        helper.make_node("Max", ["sum_1", "one"], ["sum_1_safe"]),
        helper.make_node("Div", ["sum_w", "sum_1_safe"], ["centroid"]),
        helper.make_node("Greater", ["column", "centroid"], ["left_b"]),
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
    graph = helper.make_graph(
        nodes,
        "lung_ct_threshold",
        [helper.make_tensor_value_info("ct", TensorProto.FLOAT, [1, 1, "D", "H", "W"])],
        [helper.make_tensor_value_info("labels", TensorProto.UINT8, [1, 1, "D", "H", "W"])],
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
