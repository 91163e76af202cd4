"""Build-time helpers for the brainchop MeshNet packages (not imported by the node).

Used by ``models/brain_structures_t1/build_model.py`` and
``models/brain_extraction_mr/build_model.py``.
The node itself only reads ``models/*/model.toml`` and ``model.onnx``; nothing here runs at service
time.

Three parts:

1. ``load_tfjs_meshnet``  reads a TensorFlow.js *layers* model (``model.json`` topology + weights
   manifest, ``*.bin`` float32 weights) into a plain list of layers.
2. ``build_onnx`` writes that list as an ONNX graph with ``onnx.helper`` (opset 17), and
   ``TorchMeshNet`` is the same network in PyTorch (the "original framework" reference: TF.js cannot
   run 256^3 here).  ``tfjs_check`` optionally runs the real TF.js (npm ``@tensorflow/tfjs``,
   pure-JS CPU
   backend) on a small patch and compares.
3. A re-implementation of the brainchop web app's pipeline (niivue ``conform``, min-max
   normalisation, threshold crop, transpose, argmax, paste back, largest 26-connected component),
   each step citing the upstream file and function it reproduces.

Semantics reproduced from the TF.js model / brainchop (see the build scripts' PROVENANCE.md):

* ``Conv3D`` with ``padding='same'``, stride 1: TF pads ``dilation*(k-1)`` in total, half before and
  half after (k = 3 -> ``dilation`` on each side; k = 1 -> none).  Kernel layout ``[kd, kh, kw, in,
  out]`` (channels-last), transposed here to ONNX/PyTorch ``[out, in, kd, kh, kw]``; the spatial
  axes
  keep their order, so the ONNX tensor ``(N, C, D, H, W)`` is the TF.js tensor ``(N, D, H, W, C)``.
* Layers whose name ends in ``_gn`` (mindgrab) are followed by an instance normalisation that is not
  in model.json: brainchop's ``LayerNormInPlace`` (tensor-utils.js) applied after ``layer.apply`` in
  ``runFullVolumeInference``: ``tf.moments(x, [1, 2, 3], keepDims)`` per sample and channel,
  ``(x - mean) * rsqrt(variance + 1e-5)``, biased variance, no affine -- the same as PyTorch
  ``GroupNorm(C, C, affine=False)`` / ``InstanceNorm3d(eps=1e-5)``.  In the ONNX graph it is written
  out (ReduceMean over W, then H, then D; Sub, Mul, Sqrt, Reciprocal) rather than as
  ``InstanceNormalization``, whose ONNX Runtime CPU kernel is not accurate enough over 10^7 voxels.
* Activations: ``elu`` (alpha 1), ``relu``, ``gelu`` = exact Erf GELU as tfjs-layers 4.x computes it
  (``x * 0.5 * (1 + erf(x / sqrt 2))``; ``gelu_new`` would be the tanh form), ``sigmoid``, ``tanh``.
* The last layer is a linear 1x1x1 Conv3D: the graph outputs raw logits (no softmax in the model).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OPSET = 17
INSTANCE_NORM_EPS = 1e-5  # brainchop tensor-utils.js LayerNormInPlace(x, epsilon = 1e-5)


# --------------------------------------------------------------------------------------------
# locations


def shared_models_dir() -> Path:
    """``RADNODE_SHARED_MODELS`` (default ``<repo>/../shared/models``)."""
    return Path(os.environ.get("RADNODE_SHARED_MODELS", REPO.parent / "shared" / "models"))


def test_data_dir() -> Path:
    """``RADNODE_TEST_DATA`` (default ``<repo>/../shared/data``)."""
    return Path(os.environ.get("RADNODE_TEST_DATA", REPO.parent / "shared" / "data"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# 1. TF.js layers model -> list of layers


@dataclass
class ConvLayer:
    name: str
    weight: np.ndarray  # (out, in, kd, kh, kw) float32
    bias: np.ndarray | None  # (out,) float32
    dilation: tuple[int, int, int]
    pads: tuple[int, int, int, int, int, int]  # begin d,h,w then end d,h,w (ONNX order)
    instance_norm: bool  # name ends in "_gn": brainchop LayerNormInPlace after the conv


@dataclass
class ActivationLayer:
    name: str
    kind: str  # elu, relu, gelu, sigmoid, tanh


@dataclass
class MeshNetSpec:
    name: str
    layers: list = field(default_factory=list)
    in_channels: int = 1
    out_channels: int = 0
    source: dict = field(default_factory=dict)  # file names and sha256 of model.json / .bin

    def describe(self) -> str:
        convs = [la for la in self.layers if isinstance(la, ConvLayer)]
        acts = sorted({la.kind for la in self.layers if isinstance(la, ActivationLayer)})
        n_par = sum(c.weight.size + (0 if c.bias is None else c.bias.size) for c in convs)
        return (
            f"{self.name}: {len(convs)} Conv3D (dilations {[c.dilation[0] for c in convs]}), "
            f"activations {acts}, {sum(c.instance_norm for c in convs)} instance-normalised, "
            f"{n_par} parameters, {self.in_channels} -> {self.out_channels} channels"
        )


_ACTIVATIONS = {"elu", "relu", "gelu", "sigmoid", "tanh", "linear"}


def _same_pads(kernel: list[int], dilation: list[int]) -> tuple[int, ...]:
    """TF 'same' padding for stride 1: total dilation*(k-1), floor half before, the rest after."""
    begin, end = [], []
    for k, d in zip(kernel, dilation, strict=True):
        total = d * (k - 1)
        begin.append(total // 2)
        end.append(total - total // 2)
    return tuple(begin + end)


def load_tfjs_meshnet(folder: Path) -> MeshNetSpec:
    """Read ``folder/model.json`` and its weight files (weightsManifest order, float32)."""
    model_json = folder / "model.json"
    mj = json.loads(model_json.read_text())
    if mj.get("format") != "layers-model":
        raise ValueError(f"{model_json}: not a TF.js layers model (format {mj.get('format')!r})")
    topology = mj["modelTopology"]
    config = topology.get("model_config", topology)["config"]
    layers_json = config["layers"] if isinstance(config, dict) else config

    # weights: the manifest groups' files concatenated, each weight float32 in order
    weights: dict[str, np.ndarray] = {}
    source = {"model.json": sha256(model_json)}
    for group in mj["weightsManifest"]:
        blob = b"".join((folder / p).read_bytes() for p in group["paths"])
        for p in group["paths"]:
            source[p] = sha256(folder / p)
        offset = 0
        for w in group["weights"]:
            if w.get("dtype", "float32") != "float32" or "quantization" in w:
                raise ValueError(f"{model_json}: weight {w['name']} is not plain float32")
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            arr = np.frombuffer(blob, dtype="<f4", count=n, offset=offset).reshape(w["shape"])
            weights[w["name"]] = arr.astype(np.float32)
            offset += 4 * n
        if offset != len(blob):
            raise ValueError(f"{model_json}: {len(blob) - offset} bytes of weights left unread")

    spec = MeshNetSpec(name=folder.name, source=source)
    previous = None
    channels = None
    for layer in layers_json:
        cls, cfg = layer["class_name"], layer["config"]
        name = layer.get("name", cfg.get("name"))
        inbound = layer.get("inbound_nodes") or []
        if previous is not None:  # a plain chain: each layer reads the previous one
            srcs = [n[0] for node in inbound for n in node]
            if srcs != [previous]:
                raise ValueError(
                    f"{model_json}: layer {name} reads {srcs}, expected [{previous!r}]"
                )
        if cls == "InputLayer":
            shape = cfg["batch_input_shape"]
            if len(shape) != 5:
                raise ValueError(f"{model_json}: input shape {shape} is not 5-D")
            channels = spec.in_channels = shape[-1]
        elif cls == "Conv3D":
            if cfg.get("data_format", "channels_last") != "channels_last":
                raise ValueError(f"{model_json}: {name}: only channels_last is supported")
            if list(cfg["strides"]) != [1, 1, 1]:
                raise ValueError(f"{model_json}: {name}: strides {cfg['strides']} unsupported")
            kernel = list(cfg["kernel_size"])
            dil = list(cfg["dilation_rate"])
            if cfg["padding"] == "same":
                pads = _same_pads(kernel, dil)
            elif cfg["padding"] == "valid":
                pads = (0,) * 6
            else:
                raise ValueError(f"{model_json}: {name}: padding {cfg['padding']!r}")
            k = weights[f"{name}/kernel"]  # (kd, kh, kw, in, out)
            if (
                list(k.shape[:3]) != kernel
                or k.shape[3] != channels
                or k.shape[4] != cfg["filters"]
            ):
                raise ValueError(f"{model_json}: {name}: kernel shape {k.shape} does not fit")
            bias = weights.get(f"{name}/bias") if cfg.get("use_bias", True) else None
            if cfg.get("use_bias", True) and bias is None:
                raise ValueError(f"{model_json}: {name}: bias missing from the weights")
            spec.layers.append(
                ConvLayer(
                    name=name,
                    weight=np.ascontiguousarray(k.transpose(4, 3, 0, 1, 2)),
                    bias=None if bias is None else np.ascontiguousarray(bias),
                    dilation=tuple(dil),
                    pads=pads,
                    instance_norm=name.endswith("_gn"),
                )
            )
            channels = cfg["filters"]
            act = cfg.get("activation", "linear")
            if act not in _ACTIVATIONS:
                raise ValueError(f"{model_json}: {name}: activation {act!r} unsupported")
            if act != "linear":  # a fused activation (none in these models)
                if name.endswith("_gn"):  # brainchop would normalise after it: not modelled
                    raise ValueError(f"{model_json}: {name}: _gn with a fused activation")
                spec.layers.append(ActivationLayer(name=f"{name}/activation", kind=act))
        elif cls == "Activation":
            act = cfg["activation"]
            if act not in _ACTIVATIONS:
                raise ValueError(f"{model_json}: {name}: activation {act!r} unsupported")
            if act != "linear":
                spec.layers.append(ActivationLayer(name=name, kind=act))
        else:
            raise ValueError(f"{model_json}: layer class {cls} ({name}) unsupported")
        previous = name
    spec.out_channels = channels
    return spec


# --------------------------------------------------------------------------------------------
# 2a. ONNX graph


def build_onnx(spec: MeshNetSpec, doc: str = ""):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    x = "input"
    sqrt2 = numpy_helper.from_array(np.array(math.sqrt(2.0), dtype=np.float32), "sqrt2")
    half = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    used_gelu = False
    used_norm = False
    convs = [la for la in spec.layers if isinstance(la, ConvLayer)]
    for i, la in enumerate(spec.layers):
        is_last = la is spec.layers[-1]
        out = "logits" if is_last else f"t{i}"
        if isinstance(la, ConvLayer):
            w = f"{la.name}.weight"
            inits.append(numpy_helper.from_array(la.weight, w))
            ins = [x, w]
            if la.bias is not None:
                inits.append(numpy_helper.from_array(la.bias, f"{la.name}.bias"))
                ins.append(f"{la.name}.bias")
            conv_out = f"t{i}_conv" if la.instance_norm else out
            nodes.append(
                helper.make_node(
                    "Conv",
                    ins,
                    [conv_out],
                    name=la.name,
                    kernel_shape=list(la.weight.shape[2:]),
                    dilations=list(la.dilation),
                    pads=list(la.pads),
                    strides=[1, 1, 1],
                    group=1,
                )
            )
            if la.instance_norm:
                # brainchop LayerNormInPlace: (x - mean) * rsqrt(var + eps), mean and biased
                # variance per
                # sample and channel over D, H, W.  Not ONNX InstanceNormalization: ONNX Runtime's
                # CPU
                # kernel (and a ReduceMean over the three axes at once) sums ~10^7 float32 values
                # with
                # errors of ~3e-4 after normalisation, which grow over 25 layers to logit errors of
                # ~0.2
                # and ~1e-5 of the voxels flipping.  One axis at a time (W, then H, then D; means of
                # equal-sized means are the mean) keeps each sum short: ~7e-7, as accurate as torch.
                p = f"{la.name}/norm/"

                def mean_dhw(src: str, dst: str) -> list:
                    return [
                        helper.make_node(
                            "ReduceMean", [src], [dst + "_w"], name=dst + "_w", axes=[4], keepdims=1
                        ),
                        helper.make_node(
                            "ReduceMean",
                            [dst + "_w"],
                            [dst + "_hw"],
                            name=dst + "_hw",
                            axes=[3],
                            keepdims=1,
                        ),
                        helper.make_node(
                            "ReduceMean", [dst + "_hw"], [dst], name=dst, axes=[2], keepdims=1
                        ),
                    ]

                used_norm = True
                nodes += mean_dhw(conv_out, p + "mean")
                nodes += [
                    helper.make_node(
                        "Sub", [conv_out, p + "mean"], [p + "centred"], name=p + "centre"
                    ),
                    helper.make_node(
                        "Mul", [p + "centred", p + "centred"], [p + "squared"], name=p + "square"
                    ),
                ]
                nodes += mean_dhw(p + "squared", p + "variance")
                nodes += [
                    helper.make_node(
                        "Add", [p + "variance", "norm_eps"], [p + "var_eps"], name=p + "add_eps"
                    ),
                    helper.make_node("Sqrt", [p + "var_eps"], [p + "std"], name=p + "sqrt"),
                    helper.make_node("Reciprocal", [p + "std"], [p + "rstd"], name=p + "rsqrt"),
                    helper.make_node("Mul", [p + "centred", p + "rstd"], [out], name=p + "scale"),
                ]
        else:
            k = la.kind
            if k == "elu":
                nodes.append(helper.make_node("Elu", [x], [out], name=la.name, alpha=1.0))
            elif k == "relu":
                nodes.append(helper.make_node("Relu", [x], [out], name=la.name))
            elif k == "sigmoid":
                nodes.append(helper.make_node("Sigmoid", [x], [out], name=la.name))
            elif k == "tanh":
                nodes.append(helper.make_node("Tanh", [x], [out], name=la.name))
            elif (
                k == "gelu"
            ):  # tfjs-layers Gelu: x * (0.5 * (1 + erf(x / sqrt 2))) (Gelu op is opset 20)
                used_gelu = True
                p = f"{la.name}/"
                nodes += [
                    helper.make_node("Div", [x, "sqrt2"], [p + "scaled"], name=p + "div"),
                    helper.make_node("Erf", [p + "scaled"], [p + "erf"], name=p + "erf"),
                    helper.make_node("Add", ["one", p + "erf"], [p + "one_plus"], name=p + "add"),
                    helper.make_node("Mul", ["half", p + "one_plus"], [p + "cdf"], name=p + "cdf"),
                    helper.make_node("Mul", [x, p + "cdf"], [out], name=p + "mul"),
                ]
            else:
                raise ValueError(k)
        x = out
    if used_gelu:
        inits += [sqrt2, half, one]
    if used_norm:
        inits.append(
            numpy_helper.from_array(np.array(INSTANCE_NORM_EPS, dtype=np.float32), "norm_eps")
        )
    if x != "logits":
        raise ValueError("the network must end in a layer")
    graph = helper.make_graph(
        nodes,
        f"meshnet_{spec.name}",
        [
            helper.make_tensor_value_info(
                "input", TensorProto.FLOAT, ["N", spec.in_channels, "D", "H", "W"]
            )
        ],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["N", spec.out_channels, "D", "H", "W"]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="radnode models/meshnet_build.py",
        doc_string=doc or f"brainchop MeshNet {spec.name} ({len(convs)} dilated Conv3D)",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_session(path: Path, threads: int = 2):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_onnx(session, x: np.ndarray) -> np.ndarray:
    """x: (D, H, W) float32 -> logits (C, D, H, W)."""
    return session.run(["logits"], {"input": x[None, None].astype(np.float32)})[0][0]


# --------------------------------------------------------------------------------------------
# 2b. PyTorch reference ("original framework" stand-in)


def torch_meshnet(spec: MeshNetSpec):
    """The same network as a torch ``nn.Sequential`` built from the same json + bin."""
    import torch
    from torch import nn

    mods = []
    for la in spec.layers:
        if isinstance(la, ConvLayer):
            b, e = la.pads[:3], la.pads[3:]
            if tuple(b) != tuple(e):
                raise ValueError(
                    f"{la.name}: asymmetric padding not supported in the torch reference"
                )
            conv = nn.Conv3d(
                la.weight.shape[1],
                la.weight.shape[0],
                tuple(la.weight.shape[2:]),
                padding=tuple(b),
                dilation=la.dilation,
                bias=la.bias is not None,
            )
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(la.weight))
                if la.bias is not None:
                    conv.bias.copy_(torch.from_numpy(la.bias))
            mods.append(conv)
            if la.instance_norm:
                mods.append(
                    nn.InstanceNorm3d(
                        la.weight.shape[0],
                        eps=INSTANCE_NORM_EPS,
                        affine=False,
                        track_running_stats=False,
                    )
                )
        else:
            mods.append(
                {
                    "elu": nn.ELU(alpha=1.0),
                    "relu": nn.ReLU(),
                    "gelu": nn.GELU(approximate="none"),
                    "sigmoid": nn.Sigmoid(),
                    "tanh": nn.Tanh(),
                }[la.kind]
            )
    return nn.Sequential(*mods).eval()


def run_torch(net, x: np.ndarray, threads: int = 2) -> np.ndarray:
    """x: (D, H, W) float32 -> logits (C, D, H, W)."""
    import torch

    torch.set_num_threads(threads)
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])[
            0
        ].numpy()


# --------------------------------------------------------------------------------------------
# 2c. optional check against the real TF.js

_TFJS_SCRIPT = r"""
// Runs a brainchop MeshNet with the real TF.js (pure-JS CPU backend) on a small patch, the way
// brainchop's runFullVolumeInference does: layer.apply() one layer at a time, and
// LayerNormInPlace (tf.moments over [1,2,3], eps 1e-5) after every layer named *_gn.
const tf = require('@tensorflow/tfjs');
const fs = require('fs');
const path = require('path');
async function main() {
  await tf.setBackend('cpu');
  const [modelJson, inputBin, outputBin, D, H, W] = process.argv.slice(2);
  const mj = JSON.parse(fs.readFileSync(modelJson));
  const dir = path.dirname(modelJson);
  const bufs = [];
  const specs = [];
  for (const g of mj.weightsManifest) {
    for (const p of g.paths) bufs.push(fs.readFileSync(path.join(dir, p)));
    for (const w of g.weights) specs.push(w);
  }
  const all = Buffer.concat(bufs);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  const model = await tf.loadLayersModel(tf.io.fromMemory({modelTopology: mj.modelTopology,
  weightSpecs: specs, weightData}));
  const raw = fs.readFileSync(inputBin);
  const x = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  let t = tf.tensor(x, [1, +D, +H, +W, 1]);
  for (let i = 1; i < model.layers.length; i++) {
    const layer = model.layers[i];
    let y = layer.apply(t);
    if (layer.name.endsWith('_gn')) {
      const m = tf.moments(y, [1, 2, 3], true);
      const z = tf.mul(tf.sub(y, m.mean), tf.rsqrt(tf.add(m.variance, 1e-5)));
      y.dispose(); m.mean.dispose(); m.variance.dispose();
      y = z;
    }
    t.dispose();
    t = y;
  }
  fs.writeFileSync(outputBin, Buffer.from(t.dataSync().buffer));
  console.log('tfjs ' + tf.version.tfjs + ' backend ' + tf.getBackend() + ' output ' + t.shape);
}
main().catch((e) => { console.error(e); process.exit(1); });
"""


def tfjs_check(model_dir: Path, x: np.ndarray, reference_logits: np.ndarray) -> dict:
    """Optional: TF.js on patch ``x`` (D, H, W) vs ``reference_logits`` (C, D, H, W).

    Needs ``node`` and a ``node_modules`` holding ``@tensorflow/tfjs`` (pure JS, ``npm install
    @tensorflow/tfjs@4.22.0`` anywhere), named by ``RADNODE_TFJS_NODE_MODULES``. Returns a dict with
    ``skipped`` (a reason) or the figures.
    """
    node = shutil.which("node")
    modules = os.environ.get("RADNODE_TFJS_NODE_MODULES")
    if not node:
        return {"skipped": "node not on PATH"}
    if not modules or not (Path(modules) / "@tensorflow" / "tfjs").is_dir():
        return {
            "skipped": "set RADNODE_TFJS_NODE_MODULES to a node_modules folder holding "
            "@tensorflow/tfjs"
        }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "run.js").write_text(_TFJS_SCRIPT)
        np.ascontiguousarray(x, dtype="<f4").tofile(tmp / "in.bin")
        env = dict(os.environ, NODE_PATH=modules)
        proc = subprocess.run(
            [
                node,
                str(tmp / "run.js"),
                str(model_dir / "model.json"),
                str(tmp / "in.bin"),
                str(tmp / "out.bin"),
                *map(str, x.shape),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if proc.returncode:
            return {"skipped": f"tfjs run failed: {proc.stderr.strip()[-500:]}"}
        c = reference_logits.shape[0]
        out = np.fromfile(tmp / "out.bin", dtype="<f4").reshape(*x.shape, c).transpose(3, 0, 1, 2)
    diff = np.abs(out - reference_logits)
    return {
        "tfjs": proc.stdout.strip(),
        "patch_shape": list(x.shape),
        "max_abs_diff": float(diff.max()),
        "max_abs_logit": float(np.abs(reference_logits).max()),
        "argmax_agreement": float((out.argmax(0) == reference_logits.argmax(0)).mean()),
    }


# --------------------------------------------------------------------------------------------
# 3. brainchop web-app pipeline, re-implemented (reference only)
#
# Upstream: neuroneural/brainchop (main.js, brainchop-webworker.js / brainchop-mainthread.js,
# tensor-utils.js, bwlabels.js) around commit 4c87885 (2025-08-13), and niivue's
# Niivue.conform() (a port of FastSurfer conform.py; nibabel mghformat.py for the geometry).


def load_volume(path: Path):
    """nibabel load: (data as stored, float32 data*slope+inter, affine float64, header dtype)."""
    import nibabel as nib

    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj)
    if raw.ndim == 4:
        raw = raw[..., 0]
    scaled = np.asarray(img.dataobj, dtype=np.float32)
    if scaled.ndim == 4:
        scaled = scaled[..., 0]
    return raw, scaled, np.asarray(img.affine, dtype=np.float64), img.get_data_dtype(), img


def is_conformed(data: np.ndarray, affine: np.ndarray) -> bool:
    """brainchop main.js ensureConformed(): 256^3, permRAS [-1, 3, -2] (LIA) and a Uint8Array image
    -> used as it is (no conform).  (The voxel size is not checked upstream.)"""
    import nibabel as nib

    return (
        data.shape == (256, 256, 256)
        and data.dtype == np.uint8
        and nib.aff2axcodes(affine) == ("L", "I", "A")
    )


class _F32Mat4:
    """The few gl-matrix mat4/vec4 operations niivue's conformVox2Vox uses, stored like gl-matrix:
    Float32Array, column-major, arithmetic in doubles, every stored result rounded to float32."""

    @staticmethod
    def f32(a):
        return np.asarray(a, dtype=np.float64).astype(np.float32).astype(np.float64)

    @staticmethod
    def from_values(vals):  # mat4.fromValues: the 16 numbers in storage order
        return _F32Mat4.f32(vals)

    @staticmethod
    def transpose(a):
        return a.reshape(4, 4).T.reshape(16).copy()

    @staticmethod
    def transform_vec4(v, m):  # vec4.transformMat4(out, a, m): out[r] = sum_c m[c*4 + r] * a[c]
        x, y, z, w = v
        out = [
            m[0] * x + m[4] * y + m[8] * z + m[12] * w,
            m[1] * x + m[5] * y + m[9] * z + m[13] * w,
            m[2] * x + m[6] * y + m[10] * z + m[14] * w,
            m[3] * x + m[7] * y + m[11] * z + m[15] * w,
        ]
        return _F32Mat4.f32(out)

    @staticmethod
    def scale(a, v):  # mat4.scale(out, a, v): columns 0..2 times v
        out = a.copy()
        for c in range(3):
            out[c * 4 : c * 4 + 4] = a[c * 4 : c * 4 + 4] * v[c]
        return _F32Mat4.f32(out)

    @staticmethod
    def multiply(a, b):  # mat4.multiply(out, a, b) (gl-matrix loop order)
        out = np.zeros(16)
        for col in range(4):
            b0, b1, b2, b3 = b[col * 4 : col * 4 + 4]
            for r in range(4):
                out[col * 4 + r] = b0 * a[r] + b1 * a[4 + r] + b2 * a[8 + r] + b3 * a[12 + r]
        return _F32Mat4.f32(out)

    @staticmethod
    def invert(a):  # mat4.invert, gl-matrix's cofactor expansion
        a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33 = a
        b00 = a00 * a11 - a01 * a10
        b01 = a00 * a12 - a02 * a10
        b02 = a00 * a13 - a03 * a10
        b03 = a01 * a12 - a02 * a11
        b04 = a01 * a13 - a03 * a11
        b05 = a02 * a13 - a03 * a12
        b06 = a20 * a31 - a21 * a30
        b07 = a20 * a32 - a22 * a30
        b08 = a20 * a33 - a23 * a30
        b09 = a21 * a32 - a22 * a31
        b10 = a21 * a33 - a23 * a31
        b11 = a22 * a33 - a23 * a32
        det = b00 * b11 - b01 * b10 + b02 * b09 + b03 * b08 - b04 * b07 + b05 * b06
        if not det:
            raise ValueError("singular affine")
        det = 1.0 / det
        out = [
            (a11 * b11 - a12 * b10 + a13 * b09) * det,
            (a02 * b10 - a01 * b11 - a03 * b09) * det,
            (a31 * b05 - a32 * b04 + a33 * b03) * det,
            (a22 * b04 - a21 * b05 - a23 * b03) * det,
            (a12 * b08 - a10 * b11 - a13 * b07) * det,
            (a00 * b11 - a02 * b08 + a03 * b07) * det,
            (a32 * b02 - a30 * b05 - a33 * b01) * det,
            (a20 * b05 - a22 * b02 + a23 * b01) * det,
            (a10 * b10 - a11 * b08 + a13 * b06) * det,
            (a01 * b08 - a00 * b10 - a03 * b06) * det,
            (a30 * b04 - a31 * b02 + a33 * b00) * det,
            (a21 * b02 - a20 * b04 - a23 * b00) * det,
            (a11 * b07 - a10 * b09 - a12 * b06) * det,
            (a00 * b09 - a01 * b07 + a02 * b06) * det,
            (a31 * b01 - a30 * b03 - a32 * b00) * det,
            (a20 * b03 - a21 * b01 + a22 * b00) * det,
        ]
        return _F32Mat4.f32(out)


def conform_vox2vox(in_shape, in_affine: np.ndarray, out_dim: int = 256, out_mm: float = 1.0):
    """niivue conformVox2Vox(inDims, inAffine, outDim=256, outMM=1, toRAS=false).

    Returns (out_affine 4x4 row-major, inv_vox2vox as the 16 float32-stored numbers niivue's
    resampler
    reads row-major: input voxel = inv_vox2vox @ output voxel).  The output grid is LIA, 1 mm,
    256^3,
    centred like FreeSurfer: c_ras = in_affine @ (in_dims / 2)."""
    M = _F32Mat4
    affine = M.from_values(np.asarray(in_affine, dtype=np.float64).reshape(16))  # row-major numbers
    half = M.f32([in_shape[0] / 2, in_shape[1] / 2, in_shape[2] / 2, 1])
    pxyz_c = M.transform_vec4(half, M.transpose(affine))[:3]
    delta = [out_mm] * 3
    mdc = M.transpose(
        M.from_values([-1, 0, 0, 0, 0, 0, 1, 0, 0, -1, 0, 0, 0, 0, 0, 1])
    )  # toRAS false
    mdcd = M.scale(mdc, delta)
    vol_center = M.transform_vec4(M.f32([out_dim, out_dim, out_dim, 1]), mdcd)
    vol_center = M.f32(vol_center * 0.5)
    translate = M.f32(pxyz_c - vol_center[:3])
    out_affine = M.transpose(mdcd)
    out_affine[3], out_affine[7], out_affine[11] = translate
    inv_out = M.invert(out_affine)
    vox2vox = M.multiply(affine, inv_out)
    inv_vox2vox = M.invert(vox2vox)
    return out_affine.reshape(4, 4).copy(), inv_vox2vox


def _conform_get_scale(
    raw_scaled: np.ndarray,
    dtype,
    g_min: float,
    g_max: float,
    dst_min=0.0,
    dst_max=255.0,
    f_low=0.0,
    f_high=0.999,
):
    """niivue getScale() = FastSurfer conform.py getscale(): uint8 input is not rescaled (returns
    [global_min, 1]); otherwise a 1000-bin histogram of the input voxels, lower limit at f_low = 0
    (-> the minimum), upper limit where the cumulative count reaches voxnum - floor((1 - f_high) *
    nz),
    nz = voxels with |v| >= 1e-15."""
    if np.dtype(dtype) == np.uint8:
        return g_min, 1.0
    img = raw_scaled.reshape(-1).astype(np.float32)
    voxnum = img.size
    if f_low == 0.0 and f_high == 1.0:
        return g_min, 1.0
    nz = int((np.abs(img.astype(np.float64)) >= 1e-15).sum())
    histosize = 1000
    bin_size = (g_max - g_min) / histosize
    bins = np.floor((img.astype(np.float64) - g_min) / bin_size)
    bins = np.minimum(bins, histosize - 1).astype(np.int64)
    cs = np.cumsum(np.bincount(bins, minlength=histosize))
    nth = math.floor(f_low * voxnum)
    idx = 0
    while idx < histosize and cs[idx] < nth:
        idx += 1
    src_min = idx * bin_size + g_min
    nth = voxnum - math.floor((1.0 - f_high) * nz)
    idx = 0
    while idx < histosize - 1 and cs[idx + 1] < nth:
        idx += 1
    src_max = idx * bin_size + g_min
    scale = 1.0 if src_min == src_max else (dst_max - dst_min) / (src_max - src_min)
    return src_min, scale


def niivue_conform(scaled: np.ndarray, dtype, affine: np.ndarray, truncate: bool = True):
    """niivue Niivue.conform(volume, toRAS=false, isLinear=true, asFloat32=false,
    isRobustMinMax=false),
    as brainchop main.js calls it (``nv1.conform(nii, false)``) when the volume is not already
    conformed.

    1. output grid: 256^3, 1 mm, LIA (conformVox2Vox), centred on the input's c_ras;
    2. trilinear resampling of the float input (``img*scl_slope+scl_inter``): an output voxel whose
       floor(ix) < 0 or ceil(ix) >= dim (any axis) stays 0; weights from the fractional parts;
       result stored as float32;
    3. intensities: getScale (uint8 input: src_min = global minimum, scale 1; else robust max at
       f_high = 0.999 of a 1000-bin histogram), scalecropUint8: ``0 + scale*(v - src_min)`` clamped
       to
       [0, 255] and stored in a Uint8Array (truncation towards zero).
    Returns (uint8 volume indexed [x, y, z] = nibabel order of the LIA grid, LIA affine).
    ``truncate=False`` (not brainchop; for sensitivity checks) returns the float32 values before the
    uint8 store instead."""
    out_affine, m = conform_vox2vox(scaled.shape, affine)
    dim_x, dim_y, dim_z = scaled.shape
    flat = np.asarray(scaled, dtype=np.float32).reshape(-1, order="F").astype(np.float64)
    out = np.zeros((256, 256, 256), dtype=np.float32)  # [x, y, z]
    x = np.arange(256, dtype=np.float64)[:, None]
    y = np.arange(256, dtype=np.float64)[None, :]
    for z in range(256):
        ix = x * m[0] + ((y * m[1] + z * m[2]) + m[3])
        iy = x * m[4] + ((y * m[5] + z * m[6]) + m[7])
        iz = x * m[8] + ((y * m[9] + z * m[10]) + m[11])
        fx, fy, fz = np.floor(ix), np.floor(iy), np.floor(iz)
        ok = (
            (fx >= 0)
            & (fy >= 0)
            & (fz >= 0)
            & (np.ceil(ix) < dim_x)
            & (np.ceil(iy) < dim_y)
            & (np.ceil(iz) < dim_z)
        )
        if not ok.any():
            continue
        ix, iy, iz, fx, fy, fz = ix[ok], iy[ok], iz[ok], fx[ok], fy[ok], fz[ok]
        rcx, rcy, rcz = ix - fx, iy - fy, iz - fz
        rfx, rfy, rfz = 1 - rcx, 1 - rcy, 1 - rcz
        fff = (fx + fy * dim_x + fz * dim_x * dim_y).astype(np.int64)
        dxy = dim_x * dim_y
        vx = flat[fff] * rfx * rfy * rfz
        vx = vx + flat[fff + dxy] * rfx * rfy * rcz
        vx = vx + flat[fff + dim_x] * rfx * rcy * rfz
        vx = vx + flat[fff + dim_x + dxy] * rfx * rcy * rcz
        vx = vx + flat[fff + 1] * rcx * rfy * rfz
        vx = vx + flat[fff + 1 + dxy] * rcx * rfy * rcz
        vx = vx + flat[fff + 1 + dim_x] * rcx * rcy * rfz
        vx = vx + flat[fff + 1 + dim_x + dxy] * rcx * rcy * rcz
        sl = out[:, :, z]
        sl[ok] = vx.astype(np.float32)
    g_min, g_max = float(flat.min()), float(flat.max())
    src_min, scale = _conform_get_scale(scaled, dtype, g_min, g_max)
    v = 0.0 + scale * (out.astype(np.float64) - src_min)
    v = np.clip(v, 0.0, 255.0)
    if not truncate:
        return v.astype(np.float32), out_affine
    return np.trunc(v).astype(np.uint8), out_affine


def brainchop_slices(conformed: np.ndarray) -> np.ndarray:
    """tensor-utils.js getAllSlicesDataAsTF3D(): the NIfTI-order image (x fastest) stacked as
    ``[slices, rows, cols] = [z, y, x]``, values ``v & 0xff`` as float32."""
    return np.ascontiguousarray(conformed.transpose(2, 1, 0)).astype(np.float32)


def minmax_normalise(slices: np.ndarray) -> np.ndarray:
    """tensor-utils.js minMaxNormalizeVolumeData(): ``(x - min) / (max - min)`` over the whole
    256^3 volume, float32 (``enableQuantileNorm`` is false for both models)."""
    mn, mx = np.float32(slices.min()), np.float32(slices.max())
    return ((slices - mn) / (mx - mn)).astype(np.float32)


def threshold_mask(normalised: np.ndarray, auto_threshold: float) -> np.ndarray:
    """tensor-utils.js applyMriThreshold(tensor, autoThreshold): ``x > max(x) * autoThreshold``, in
    float32 (max is 1 after min-max, so ``x > float32(autoThreshold)``).  Used when 0 <
    autoThreshold <= 1
    and there is no pre-model; otherwise brainchop uses ``x > 0``."""
    thr = np.float32(np.float32(normalised.max()) * np.float32(auto_threshold))
    return normalised > thr


def crop_box(mask: np.ndarray, pad: int):
    """tensor-utils.js cropAndGetCorner(tensor3d, mask_3d, cropPadding) with firstLastNonZero3D():
    per axis the first and last index where the mask has a voxel, widened by ``pad`` on each side
    but
    clamped to [0, 255] (the padding is real image content, not zeros; nothing is resized).
    Returns the start corner and the stop (exclusive) per axis."""
    start, stop = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            raise ValueError("empty crop mask")
        lo, hi = int(hit[0]), int(hit[-1])
        start.append(max(0, lo - min(lo, pad)))
        stop.append(min(255, hi + min(255 - hi, pad)) + 1)
    return tuple(start), tuple(stop)


def paste_back(labels_crop: np.ndarray, start, shape=(256, 256, 256)) -> np.ndarray:
    """tensor-utils.js restoreTo256Cube(): the cropped label volume padded with zeros back into the
    256^3 volume at its corner."""
    out = np.zeros(shape, dtype=np.uint8)
    d, h, w = labels_crop.shape
    out[start[0] : start[0] + d, start[1] : start[1] + h, start[2] : start[2] + w] = labels_crop
    return out


def largest_component_26(labels: np.ndarray) -> np.ndarray:
    """tensor-utils.js processSegmentationVolume() with opts.isPostProcessEnable (true by default):
    bwlabels.js BWLabeler.bwlabel(img, shape, conn=26, binarize=true,
    onlyLargestClusterPerClass=true)
    binarises (label != 0) and keeps the single largest 26-connected cluster; the labels are
    multiplied by that mask (every structure outside the largest cluster of the union -> 0)."""
    import SimpleITK as sitk

    fg = sitk.GetImageFromArray((labels != 0).astype(np.uint8))
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(fg, True))  # fullyConnected: 26 in 3-D
    if cc.max() == 0:
        return labels.copy()
    sizes = np.bincount(cc.reshape(-1))
    sizes[0] = 0
    keep = cc == int(sizes.argmax())
    return np.where(keep, labels, 0).astype(np.uint8)


def unconform_nearest(
    labels_conf: np.ndarray, conf_affine: np.ndarray, src_shape, src_affine: np.ndarray
):
    """Not a brainchop step (brainchop shows the result on the conformed grid): the conformed labels
    ([x, y, z] of the LIA grid) brought onto the input's own grid by nearest neighbour (each source
    voxel centre -> conformed voxel, rounded; outside -> 0)."""
    m = np.linalg.inv(conf_affine) @ src_affine
    out = np.zeros(src_shape, dtype=np.uint8)
    i = np.arange(src_shape[0], dtype=np.float64)[:, None]
    j = np.arange(src_shape[1], dtype=np.float64)[None, :]
    for k in range(src_shape[2]):
        c = [
            np.rint(m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3]).astype(np.int64)
            for r in range(3)
        ]
        ok = (c[0] >= 0) & (c[0] < 256) & (c[1] >= 0) & (c[1] < 256) & (c[2] >= 0) & (c[2] < 256)
        sl = out[:, :, k]
        sl[ok] = labels_conf[c[0][ok], c[1][ok], c[2][ok]]
    return out


@dataclass
class BrainchopParams:
    """The per-model entry of brainchop-parameters.js (inferenceModelsList) that matters here."""

    model_id: int
    enable_transpose: bool
    enable_crop: bool
    crop_padding: int
    auto_threshold: float
    enable_quantile_norm: bool
    model_type: str  # 'Atlas', 'Brain_Extraction', ...
    post_process: bool = True  # brainChopOpts.isPostProcessEnable


def read_brainchop_params(model_id: int) -> dict:
    """The raw fields of entry ``id`` in brainchop-parameters.js (a light parser, for the record)"""
    text = (shared_models_dir() / "brainchop" / "brainchop-parameters.js").read_text()
    start = text.index(f"id: {model_id},")
    end = text.index("\n  }", start)
    fields = {}
    for line in text[start:end].splitlines():
        line = line.split("//")[0].strip().rstrip(",")
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip().strip("'\"")
    return fields


@dataclass
class PipelineResult:
    conformed: np.ndarray  # uint8 [x, y, z] LIA 256^3
    conformed_affine: np.ndarray
    was_conformed: bool  # True: conform skipped (input already conformed)
    net_input: np.ndarray  # (D, H, W) float32, what the network sees
    crop_start: tuple  # in brainchop's [z, y, x] slice order
    crop_stop: tuple
    logits: np.ndarray  # (C, D, H, W)
    labels_conformed: np.ndarray  # uint8 [x, y, z] after post-processing
    labels_before_postprocess: np.ndarray
    seconds: dict


def brainchop_pipeline(raw, scaled, affine, params: BrainchopParams, run_net) -> PipelineResult:
    """brainchop-webworker.js runInferenceWW -> inferenceFullVolumePhase1 (no pre-model) ->
    runFullVolumeInference, re-implemented; ``raw``/``scaled``/``affine`` as ``load_volume`` gives
    them,
    ``run_net(x (D,H,W) float32) -> logits (C,D,H,W)``."""
    import time

    t = {}
    t0 = time.perf_counter()
    if is_conformed(raw, affine):  # main.js ensureConformed(): used as it is
        conformed, conf_affine, was = np.asarray(raw, dtype=np.uint8), affine, True
    else:
        conformed, conf_affine = niivue_conform(scaled, raw.dtype, affine)
        was = False
    t["conform"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    slices = brainchop_slices(conformed)  # [z, y, x]
    if params.enable_quantile_norm:
        raise NotImplementedError("quantile normalisation is not used by these models")
    norm = minmax_normalise(slices)
    if 0 < params.auto_threshold <= 1:
        mask = threshold_mask(norm, params.auto_threshold)
    else:
        mask = norm > 0
    if not params.enable_crop:
        raise NotImplementedError("both models crop")
    start, stop = crop_box(mask, params.crop_padding)
    crop = norm[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]]
    net_in = np.ascontiguousarray(
        crop.transpose(2, 1, 0) if params.enable_transpose else crop
    )  # tf transpose()
    t["preprocess"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = run_net(net_in)
    t["network"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lab = logits.argmax(0).astype(np.uint8)  # tf.argMax over channels (first maximum wins)
    if params.enable_transpose:
        lab = lab.transpose(2, 1, 0)  # transpose back to [z, y, x]
    full = paste_back(lab, start)  # [z, y, x]
    post = largest_component_26(full) if params.post_process else full
    t["postprocess"] = time.perf_counter() - t0
    return PipelineResult(
        conformed=conformed,
        conformed_affine=conf_affine,
        was_conformed=was,
        net_input=net_in,
        crop_start=start,
        crop_stop=stop,
        logits=logits,
        labels_conformed=np.ascontiguousarray(post.transpose(2, 1, 0)),
        labels_before_postprocess=np.ascontiguousarray(full.transpose(2, 1, 0)),
        seconds=t,
    )


def save_labels(labels: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(labels.astype(np.uint8), affine)
    img.header.set_data_dtype(np.uint8)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = img.to_bytes()
    with open(path, "wb") as f:  # deterministic gzip (no file name or time stamp)
        f.write(gzip.compress(raw, compresslevel=9, mtime=0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return float("nan") if s == 0 else 2.0 * int((a & b).sum()) / s


# --------------------------------------------------------------------------------------------
# 4. building a package and recording the reference (shared by the two build scripts)


def versions() -> dict:
    import nibabel
    import onnx
    import onnxruntime
    import SimpleITK
    import torch

    return {
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
    }


def check_params(params: BrainchopParams) -> dict:
    """Compare the hard-coded parameters with brainchop-parameters.js; returns the raw entry."""
    raw = read_brainchop_params(params.model_id)
    want = {
        "enableTranspose": str(params.enable_transpose).lower(),
        "enableCrop": str(params.enable_crop).lower(),
        "cropPadding": str(params.crop_padding),
        "autoThreshold": str(params.auto_threshold),
        "enableQuantileNorm": str(params.enable_quantile_norm).lower(),
        "type": params.model_type,
        "preModelId": "null",
    }
    bad = {k: (raw.get(k), v) for k, v in want.items() if raw.get(k) != v}
    if bad:
        raise ValueError(f"brainchop-parameters.js id {params.model_id} differs: {bad}")
    return {
        k: raw[k]
        for k in (
            "id",
            "path",
            "modelName",
            "type",
            "preModelId",
            "enableTranspose",
            "enableCrop",
            "cropPadding",
            "autoThreshold",
            "enableQuantileNorm",
            "enableSeqConv",
        )
    }


def build_package(pkg_dir: Path, upstream: str, doc: str):
    """Write ``pkg_dir/model.onnx`` from ``<shared>/brainchop/<upstream>``; returns (spec, path)."""
    import onnx

    spec = load_tfjs_meshnet(shared_models_dir() / "brainchop" / upstream)
    model = build_onnx(spec, doc=doc)
    out = pkg_dir / "model.onnx"
    onnx.save(model, out)
    print(f"wrote {out} ({out.stat().st_size} bytes): {spec.describe()}")
    return spec, out


def run_case(
    case: str,
    rel_path: str,
    pkg_dir: Path,
    spec: MeshNetSpec,
    onnx_path: Path,
    params: BrainchopParams,
    steps: list[str],
    threads: int = 2,
    extra=None,
) -> dict:
    """Full brainchop pipeline with the torch network (the reference) and with ONNX Runtime on the
    same network input; saves ``reference/<case>_labels.nii.gz`` (input grid) and, when the input
    had
    to be conformed, ``reference/<case>_labels_conformed.nii.gz`` (256^3 LIA model grid), plus
    ``reference/<case>.json``.  ``extra(result, record)`` may add case-specific checks."""
    import time

    path = test_data_dir() / rel_path
    raw, scaled, affine, dtype, _img = load_volume(path)
    net = torch_meshnet(spec)
    print(f"[{case}] {rel_path}: {raw.shape} {dtype}, running the torch reference ...", flush=True)
    res = brainchop_pipeline(raw, scaled, affine, params, lambda x: run_torch(net, x, threads))
    print(
        f"[{case}] crop {res.crop_start}..{res.crop_stop} -> network input {res.net_input.shape}; "
        f"seconds {', '.join(f'{k} {v:.1f}' for k, v in res.seconds.items())}",
        flush=True,
    )
    sess = onnx_session(onnx_path, threads)
    t0 = time.perf_counter()
    logits_ort = run_onnx(sess, res.net_input)
    t_ort = time.perf_counter() - t0
    lab_t = res.logits.argmax(0)
    lab_o = logits_ort.argmax(0)
    # the ONNX labels through the same paste-back and post-processing
    lo = lab_o.astype(np.uint8)
    if params.enable_transpose:
        lo = lo.transpose(2, 1, 0)
    full_o = paste_back(lo, res.crop_start)
    post_o = (largest_component_26(full_o) if params.post_process else full_o).transpose(2, 1, 0)
    ref = res.labels_conformed
    if res.was_conformed:
        ref_src, ort_src = ref, post_o
    else:
        ref_src = unconform_nearest(ref, res.conformed_affine, raw.shape, affine)
        ort_src = unconform_nearest(post_o, res.conformed_affine, raw.shape, affine)
    ref_dir = pkg_dir / "reference"
    save_labels(ref_src, affine, ref_dir / f"{case}_labels.nii.gz")
    if not res.was_conformed:
        save_labels(ref, res.conformed_affine, ref_dir / f"{case}_labels_conformed.nii.gz")
    diff = np.abs(logits_ort - res.logits)
    counts = np.bincount(ref_src.reshape(-1), minlength=spec.out_channels)
    record = {
        "case": case,
        "input": rel_path,
        "input_sha256": sha256(path),
        "input_shape": list(raw.shape),
        "input_dtype": str(dtype),
        "labels": f"{case}_labels.nii.gz",
        "labels_grid": "the input file's own voxel grid (same shape and affine)",
        "labels_conformed": None if res.was_conformed else f"{case}_labels_conformed.nii.gz",
        "upstream_model": {"folder": f"brainchop/{spec.name}", "files_sha256": spec.source},
        "onnx_sha256": sha256(onnx_path),
        "brainchop_parameters": check_params(params),
        "versions": versions(),
        "what_was_run": [
            *steps,
            "conform: "
            + (
                "skipped, the input is already 256^3 uint8 LIA (main.js ensureConformed)"
                if res.was_conformed
                else "niivue conform (see meshnet_build.niivue_conform)"
            ),
            "crop (in brainchop's [z, y, x] slice order of the conformed volume): "
            f"start {list(res.crop_start)}, "
            f"stop {list(res.crop_stop)} (exclusive); "
            f"network input (D, H, W) {list(res.net_input.shape)}",
            "network: torch "
            + versions()["torch"]
            + " nn.Sequential built from model.json + model.bin "
            "(meshnet_build.torch_meshnet), float32, CPU",
            "labels mapped to the input grid: "
            + (
                "identity"
                if res.was_conformed
                else "nearest neighbour from the conformed grid (not a brainchop step)"
            ),
        ],
        "onnx_vs_torch": {
            "max_abs_logit_diff": float(diff.max()),
            "max_abs_logit": float(np.abs(res.logits).max()),
            "argmax_agreement_network_output": float((lab_t == lab_o).mean()),
            "argmax_disagreeing_voxels": int((lab_t != lab_o).sum()),
            "final_label_agreement_model_grid": float((ref == post_o).mean()),
            "final_label_agreement_input_grid": float((ref_src == ort_src).mean()),
        },
        "postprocess_changed_voxels": int(
            (res.labels_before_postprocess != res.labels_conformed).sum()
        ),
        "label_voxel_counts": {int(i): int(c) for i, c in enumerate(counts) if c},
        "seconds": {
            **{k: round(v, 1) for k, v in res.seconds.items()},
            "onnxruntime_network": round(t_ort, 1),
            "threads": threads,
        },
    }
    if extra is not None:
        extra(res, record)
    (ref_dir / f"{case}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"[{case}] onnx vs torch: {json.dumps(record['onnx_vs_torch'])}", flush=True)
    return {"record": record, "result": res}
