"""Tiny ONNX models and model packages built on the fly for the inference tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from node.inference.manifest import ModelPackage, load_package

FLOAT = TensorProto.FLOAT


def const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype), name)
    )


def model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def io(name: str, shape, dtype=FLOAT):
    """A graph input/output; ``shape`` an int means that rank with symbolic dimensions."""
    if isinstance(shape, int):
        shape = [f"{name}{i}" for i in range(shape)]
    return helper.make_tensor_value_info(name, dtype, shape)


def two_class_logits(rank: int = 5, channel_axis: int = 1, threshold: float = 0.5,
                     in_shape=None, out_shape=None) -> onnx.ModelProto:
    """Channel 0 = 0, channel 1 = 10 (x - threshold): softmax argmax is x > threshold."""
    shape = in_shape or ["N", 1, *[f"S{i}" for i in range(rank - 2)]]
    if channel_axis == -1 and in_shape is None:
        shape = ["N", *[f"S{i}" for i in range(rank - 2)], 1]
    nodes = [
        const("t", threshold), const("ten", 10.0), const("zero", 0.0),
        helper.make_node("Sub", ["x", "t"], ["d"]),
        helper.make_node("Mul", ["d", "ten"], ["fg"]),
        helper.make_node("Mul", ["x", "zero"], ["bg"]),
        helper.make_node("Concat", ["bg", "fg"], ["y"], axis=channel_axis),
    ]
    return model(nodes, [io("x", shape)], [io("y", out_shape or rank)])


def pointwise_conv(rank: int = 5, weight: float = 10.0, bias: float = -5.0, in_shape=None
                   ) -> onnx.ModelProto:
    """One channel, y = weight * x + bias, as a 1x1x1 convolution (translation-equivariant)."""
    k = [1] * (rank - 2)
    w = numpy_helper.from_array(np.full([1, 1, *k], weight, np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], np.float32), "b")
    shape = in_shape or ["N", 1, *[f"S{i}" for i in range(rank - 2)]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=k)]
    return model(nodes, [io("x", shape)], [io("y", rank)], [w, b])


def shift_conv(axis_len: int = 3) -> onnx.ModelProto:
    """3D, one channel: y[..., w] = x[..., w + 1] (zero beyond the edge): not mirror-symmetric."""
    kernel = np.zeros((1, 1, 1, 1, axis_len), np.float32)
    kernel[..., -1] = 1.0
    w = numpy_helper.from_array(kernel, "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, 1, axis_len],
                              pads=[0, 0, 1, 0, 0, 1])]
    return model(nodes, [io("x", ["N", 1, "D", "H", "W"])], [io("y", 5)], [w])


def package(tmp_path: Path, name: str, toml: str, onnx_model: onnx.ModelProto | None
            ) -> ModelPackage:
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line.strip() for line in toml.splitlines()).strip() + "\n"
    (folder / "model.toml").write_text(text, encoding="utf-8")
    if onnx_model is not None:
        onnx.save(onnx_model, folder / "model.onnx")
    return load_package(folder)


def header(name: str, *, layout: str = "NCDHW", mode: str = "whole", kind: str = "segmentation",
           activation: str = "softmax", extra_input: str = "", extra_run: str = "",
           extra_output: str = "", dtype: str = "float32") -> str:
    """Manifest text up to (not including) the labels."""
    return f"""
    name = "{name}"
    version = "0.1"
    description = "test model"
    licence = "MIT"
    intended_use = "tests"
    for_clinical_use = false

    [accepts]
    modality = ["CT"]

    [input]
    name = "x"
    layout = "{layout}"
    normalize = {{ kind = "window", center = 0.5, width = 1.0 }}
    {extra_input}

    [run]
    mode = "{mode}"
    {extra_run}

    [output]
    name = "y"
    kind = "{kind}"
    activation = "{activation}"
    dtype = "{dtype}"
    {extra_output}
    """


def label(value: int, name: str, extra: str = "") -> str:
    return f"""
    [[labels]]
    value = {value}
    name = "{name}"
    {extra}
    """
