"""Build models/brain_extraction_t1/{bbox,brain}.onnx from deepbet 1.0.2; record deepbet's output.

Run from the repository root:  python models/brain_extraction_t1/build_model.py
Build-time needs (never the node's run time): torch (CPU is enough), onnx, onnxruntime, nibabel,
SimpleITK and, for the reference run, deepbet's own dependencies connected-components-3d,
fill_voids, pandas, tqdm (``pip install connected-components-3d fill_voids pandas tqdm`` and
``pip install --no-deps deepbet==1.0.2``; its GUI dependency customtkinter is not needed).

Steps
1. Locate deepbet's TorchScript networks ``data/models/bbox_model.pt`` and ``data/models/model.pt``:
   from the installed deepbet package, else ``pip download --no-deps deepbet==1.0.2`` into a
   temporary folder and unzip them from the wheel. Their sha256 are pinned below.
2. Export both with the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``, opset 17),
   input ``input`` (N, 1, D, H, W) float32, output ``output`` (N, 2, D, H, W) float32 = softmax
   over 2 channels (0 background, 1 brain), N/D/H/W dynamic (D, H, W multiples of 32); rewrite
   each InstanceNormalization into plain ops with axis-by-axis means (``rewrite_instance_norm``:
   onnxruntime's own kernel loses float32 precision on 128^3 channels; ``--plain-instance-norm``
   keeps it); write the final Softmax as plain ops (``rewrite_softmax``: onnxruntime's Softmax
   kernel over the channel axis is slow), and run ``onnx.checker``.
3. Run deepbet's own ``BrainExtraction(no_gpu=True).run()`` on chris_t1 (and the FLAIR), recording
   the networks' real inputs and the intermediate stages; compare ONNX Runtime against torch on
   those real inputs and at other spatial sizes (dynamic axes); write ``reference/``.
4. Run the torch-free re-implementation (``reference_numpy.py``) and record its agreement.

``--skip-reference`` only rewrites the ONNX files (and checks them on random inputs).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import reference_numpy as ref  # noqa: E402

DEEPBET_VERSION = "1.0.2"
OPSET = 17
WEIGHTS = {  # onnx file -> (path in the wheel, sha256 of the .pt, export size)
    "bbox.onnx": (
        "data/models/bbox_model.pt",
        "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
        128,
    ),
    "brain.onnx": (
        "data/models/model.pt",
        "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
        256,
    ),
}
WHEEL_SHA256 = "1999e2ea00ec48f6233b95b96f3901a962d3f70431c63aeb985e8a49a198473c"
INPUTS = {"chris_t1": "mr_brain_niivue/chris_t1.nii.gz", "FLAIR": "mr_brain_niivue/FLAIR.nii.gz"}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_dir() -> Path:
    return Path(os.environ.get("RADNODE_TEST_DATA", REPO.parent / "shared" / "data"))


# --------------------------------------------------------------------------- 1. weights
def locate_weights(tmp: Path, use_installed: bool = True) -> dict[str, Path]:
    """The two .pt files, from the installed deepbet 1.0.2 or from its wheel on PyPI."""
    found: dict[str, Path] = {}
    try:
        if use_installed and importlib.metadata.version("deepbet") == DEEPBET_VERSION:
            import deepbet.utils

            base = Path(deepbet.utils.DATA_PATH).parent
            found = {name: base / member for name, (member, _, _) in WEIGHTS.items()}
    except Exception:  # not installed (or deepbet's import fails): take the wheel
        found = {}
    if not all(p.is_file() for p in found.values()) or not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                f"deepbet=={DEEPBET_VERSION}",
                "-d",
                str(tmp),
            ],
            check=True,
        )
        wheel = next(tmp.glob(f"deepbet-{DEEPBET_VERSION}-*.whl"))
        if sha256(wheel) != WHEEL_SHA256:
            raise SystemExit(f"{wheel}: sha256 {sha256(wheel)} is not the pinned {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as z:
            for name, (member, _, _) in WEIGHTS.items():
                z.extract(member, tmp)
                found[name] = tmp / member
    for name, (_, digest, _) in WEIGHTS.items():
        got = sha256(found[name])
        if got != digest:
            raise SystemExit(f"{found[name]}: sha256 {got} is not the pinned {digest}")
    return found


# --------------------------------------------------------------------------- 2. export
def export(pt: Path, out: Path, size: int, accurate_instance_norm: bool = True) -> None:
    import torch

    net = torch.jit.load(str(pt), map_location="cpu").eval()
    dyn = {0: "N", 2: "D", 3: "H", 4: "W"}
    buf = io.BytesIO()
    torch.onnx.export(
        net,
        (torch.zeros(1, 1, size, size, size),),
        buf,
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": dyn, "output": dyn},
        do_constant_folding=True,
    )
    model = onnx.load_from_string(buf.getvalue())
    if accurate_instance_norm:
        rewrite_instance_norm(model)
    rewrite_softmax(model)
    model.producer_name = "radnode models/brain_extraction_t1/build_model.py"
    model.doc_string = (
        f"deepbet {DEEPBET_VERSION} ({pt.name}, sha256 {sha256(pt)}), LinkNet3d; "
        "output = softmax over (background, brain); MIT, Fisch et al. 2024"
    )
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))


def rewrite_softmax(model: onnx.ModelProto) -> int:
    """Replace each Softmax over the channel axis by ReduceMax, Sub, Exp, ReduceSum and Div.

    Why: onnxruntime's CPU Softmax over axis 1 of a 5-D tensor takes 55 % of brain.onnx's time
    at 256^3 (2.2 s of 4.0 s; bench/models); the same formula in plain ops costs ~0.3 s and
    differs by at most 3e-8. Returns the number of nodes replaced."""
    from onnx import helper, numpy_helper

    g = model.graph
    nodes, count = [], 0
    for n in g.node:
        if n.op_type != "Softmax":
            nodes.append(n)
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
        p = f"{n.name}/plain/"
        axes = numpy_helper.from_array(np.array([axis], np.int64))
        nodes += [
            helper.make_node("ReduceMax", [n.input[0]], [p + "max"], axes=[axis], keepdims=1),
            helper.make_node("Sub", [n.input[0], p + "max"], [p + "shifted"]),
            helper.make_node("Exp", [p + "shifted"], [p + "exp"]),
            helper.make_node("Constant", [], [p + "axes"], value=axes),
            helper.make_node("ReduceSum", [p + "exp", p + "axes"], [p + "sum"], keepdims=1),
            helper.make_node("Div", [p + "exp", p + "sum"], [n.output[0]]),
        ]
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    return count


def rewrite_instance_norm(model: onnx.ModelProto) -> int:
    """Replace every InstanceNormalization by the same formula in plain ops, with its means taken
    axis by axis (W, then H, then D), which keeps float32 accurate.

    Why: onnxruntime's CPU InstanceNormalization (and a single ReduceMean over D, H, W) sums up to
    128^3 values per channel in float32; at 256^3 input its result is off by ~3e-4 relative after
    the first layer and the brain probability by up to 9e-3 (148 voxels of the 256^3 mask flip),
    whereas torch float32 is within 1.4e-5 of torch float64. With means of at most 128 values per
    step, onnxruntime is within ~5e-6 of float64 and the mask equals torch's.
    deepbet's InstanceNorm3d layers have no affine parameters (scale 1, bias 0; checked here):
        y = (x - mean) * 1 / sqrt(mean((x - mean)^2) + eps)   as torch's batch_norm kernel does.
    Returns the number of nodes replaced."""
    from onnx import helper, numpy_helper

    g = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    values.update(
        {
            n.output[0]: numpy_helper.to_array(n.attribute[0].t)
            for n in g.node
            if n.op_type == "Constant" and n.attribute[0].name == "value"
        }
    )
    nodes, count = [], 0

    def mean(x: str, out: str, p: str) -> list:
        return [
            helper.make_node("ReduceMean", [x], [p + "w"], axes=[4], keepdims=1),
            helper.make_node("ReduceMean", [p + "w"], [p + "h"], axes=[3], keepdims=1),
            helper.make_node("ReduceMean", [p + "h"], [out], axes=[2], keepdims=1),
        ]

    for n in g.node:
        if n.op_type != "InstanceNormalization":
            nodes.append(n)
            continue
        x, scale, bias = n.input
        if not (np.all(values[scale] == 1) and np.all(values[bias] == 0)):
            raise SystemExit(f"{n.name}: InstanceNormalization with affine parameters")
        eps = next(a.f for a in n.attribute if a.name == "epsilon")
        p = f"{n.name}/accurate/"
        eps_value = numpy_helper.from_array(np.array(eps, np.float32))
        nodes += [
            *mean(x, p + "mean", p + "m1_"),
            helper.make_node("Sub", [x, p + "mean"], [p + "centred"]),
            helper.make_node("Mul", [p + "centred", p + "centred"], [p + "squared"]),
            *mean(p + "squared", p + "var", p + "m2_"),
            helper.make_node("Constant", [], [p + "eps"], value=eps_value),
            helper.make_node("Add", [p + "var", p + "eps"], [p + "var_eps"]),
            helper.make_node("Sqrt", [p + "var_eps"], [p + "std"]),
            helper.make_node("Reciprocal", [p + "std"], [p + "invstd"]),
            helper.make_node("Mul", [p + "centred", p + "invstd"], [n.output[0]]),
        ]
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    # drop the now unused scale/bias constants
    used = {i for n in g.node for i in n.input}
    keep = [n for n in g.node if n.op_type != "Constant" or n.output[0] in used]
    del g.node[:]
    g.node.extend(keep)
    return count


def graph_io(path: Path) -> dict:
    m = onnx.load(str(path), load_external_data=False)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    return {
        "inputs": {v.name: dims(v) for v in m.graph.input},
        "outputs": {v.name: dims(v) for v in m.graph.output},
        "opset": m.opset_import[0].version,
        "bytes": path.stat().st_size,
    }


def compare(torch_net, session, x: np.ndarray) -> dict:
    """torch vs ONNX Runtime on one (D, H, W) input: both output channels, and the > 0.5 mask."""
    import torch

    t0 = time.perf_counter()
    with torch.no_grad():
        a = torch_net(torch.from_numpy(np.ascontiguousarray(x[None, None], np.float32))).numpy()
    t1 = time.perf_counter()
    b = session.run(["output"], {"input": x[None, None].astype(np.float32)})[0]
    t2 = time.perf_counter()
    ma, mb = a[0, 1] > 0.5, b[0, 1] > 0.5
    return {
        "shape": list(x.shape),
        "max_abs_diff": float(np.abs(a - b).max()),
        "mask_voxels_differ": int((ma != mb).sum()),
        "mask_voxels": int(ma.sum()),
        "torch_s": round(t1 - t0, 2),
        "onnxruntime_s": round(t2 - t1, 2),
    }


# --------------------------------------------------------------------------- 3. deepbet itself
class _Recorder:
    """Stands in for a TorchScript network inside BrainExtraction: records input and output."""

    def __init__(self, net, store: dict, key: str):
        self.net, self.store, self.key = net, store, key

    def __call__(self, x):
        y = self.net(x)
        self.store[self.key + "_input"] = x[0, 0].cpu().numpy().copy()
        self.store[self.key + "_prob"] = y[0, 1].cpu().numpy().copy()
        return y

    def parameters(self):
        return self.net.parameters()


def run_deepbet(path: Path) -> dict:
    """deepbet's own BrainExtraction(no_gpu=True).run(path), unchanged, with the networks and the
    two post-processing helpers wrapped so that their inputs/outputs are recorded."""
    import deepbet.bet as bet_module
    import fill_voids
    import torch

    store: dict = {}
    bet = bet_module.BrainExtraction(no_gpu=True)
    bet.bbox_model = _Recorder(bet.bbox_model, store, "bbox")
    bet.model = _Recorder(bet.model, store, "brain")
    lcc = bet_module.keep_largest_connected_component
    calls: list = []

    def lcc_recorded(mask):
        calls.append(np.asarray(mask).copy())
        out = lcc(mask)
        calls.append(np.asarray(out).copy())
        return out

    def fill_recorded(mask, *a, **k):
        store["before_fill"] = np.asarray(mask).copy()
        return fill_voids.fill(mask, *a, **k)

    bet_module.keep_largest_connected_component = lcc_recorded
    saved_fv = bet_module.fill_voids
    bet_module.fill_voids = types.SimpleNamespace(fill=fill_recorded)
    try:
        t0 = time.perf_counter()
        _, mask_img, tiv = bet.run(str(path))
        store["seconds"] = time.perf_counter() - t0
    finally:
        bet_module.keep_largest_connected_component = lcc
        bet_module.fill_voids = saved_fv
    store["mask_small_raw"], store["mask_small"] = calls[0] > 0, calls[1] > 0
    store["mask"] = np.asarray(mask_img.dataobj).astype(bool)
    store["tiv_ml"] = float(tiv)
    store["bbox"] = [[s.start, s.stop] for s in bet.bbox]
    store["bbox_torch"] = bet.bbox
    store["torch_version"] = torch.__version__
    # low/high exactly as run_model computes them (the stage-1 input is already normalised)
    x, _ = ref.load_canonical(path)
    xs = torch.nn.functional.interpolate(
        torch.nan_to_num(torch.from_numpy(x))[None, None], (128, 128, 128), mode="nearest-exact"
    )[0, 0]
    store["low"], store["high"] = float(xs.quantile(0.005)), float(xs.quantile(0.995))
    store["torch_nets"] = (bet.bbox_model.net, bet.model.net)
    return store


def fill_check(n: int = 30) -> dict:
    """fill_voids.fill against SimpleITK BinaryFillhole on random 40x44x48 masks (30-75 % full)."""
    import fill_voids

    rng = np.random.default_rng(1)
    filled = differ_face = differ_full = 0
    for _ in range(n):
        m = rng.random((40, 44, 48)) < rng.uniform(0.4, 0.75)
        fv = fill_voids.fill(m)
        filled += int(fv.sum() - m.sum())
        differ_face += int((ref.fill_holes(m, False) != fv).sum())
        differ_full += int((ref.fill_holes(m, True) != fv).sum())
    return {
        "masks": n,
        "voxels_filled_by_fill_voids": filled,
        "differ_face_connected_background": differ_face,
        "differ_fully_connected_background": differ_full,
    }


def save_mask(mask: np.ndarray, img, out: Path) -> None:
    import nibabel as nib

    m = nib.Nifti1Image(mask.astype(np.uint8), img.affine)
    m.header.set_data_dtype(np.uint8)
    m.header.set_zooms(img.header.get_zooms()[:3])
    m.set_qform(img.affine, code=int(img.header["qform_code"]) or 1)
    m.set_sform(img.affine, code=int(img.header["sform_code"]) or 1)
    # mtime 0 so that a rebuild gives identical bytes
    with open(out, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
        gz.write(m.to_bytes())


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    a, b = a.astype(bool), b.astype(bool)
    return {
        "identical_fraction": float((a == b).mean()),
        "voxels_differ": int((a != b).sum()),
        "dice": float(2 * (a & b).sum() / max(1, a.sum() + b.sum())),
    }


def reference(name: str, rel: str, onnx_dir: Path, threads: int, full: bool) -> dict:
    import nibabel as nib

    path = data_dir() / rel
    print(f"[{name}] deepbet (torch) on {path}")
    d = run_deepbet(path)
    img = nib.load(str(path))
    x, _ = ref.load_canonical(path)
    zooms = [float(z) for z in img.header.get_zooms()[:3]]
    info = {
        "input": rel,
        "input_sha256": sha256(path),
        "input_shape": list(img.shape),
        "input_zooms_mm": zooms,
        "input_axcodes": "".join(nib.aff2axcodes(img.affine)),
        "deepbet_version": importlib.metadata.version("deepbet"),
        "torch_version": d["torch_version"],
        "tiv_ml": d["tiv_ml"],
        "mask_voxels": int(d["mask"].sum()),
        "input_nonzero_ml": float(1e-3 * (np.asarray(img.dataobj) != 0).sum() * np.prod(zooms)),
        "onnx_sha256": {f: sha256(onnx_dir / f) for f in WEIGHTS},
        "bbox_canonical_ras": d["bbox"],
        "bbox_note": "deepbet's self.bbox, [start, stop) per axis "
        "of the nib.as_closest_canonical array (i towards R, j towards A, k towards S)",
        "low_q005": d["low"],
        "high_q995": d["high"],
        "deepbet_seconds": round(d["seconds"], 2),
        "stage1_mask_voxels_raw": int(d["mask_small_raw"].sum()),
        "stage1_mask_voxels_largest_component": int(d["mask_small"].sum()),
    }
    print(
        f"[{name}] TIV {d['tiv_ml']:.3f} ml, bbox {d['bbox']}, low {d['low']} high {d['high']}, "
        f"{d['seconds']:.1f} s"
    )

    # ONNX Runtime against torch on the real inputs deepbet fed its networks
    bbox_s, brain_s = ref.sessions(onnx_dir, threads)
    tb, tm = d["torch_nets"]
    info["onnx_vs_torch"] = {
        "bbox.onnx": compare(tb, bbox_s, d["bbox_input"]),
        "brain.onnx": compare(tm, brain_s, d["brain_input"]),
    }
    print(f"[{name}] onnx vs torch: {info['onnx_vs_torch']}")
    if full:  # dynamic spatial axes: other multiples of 32, from the same real crop
        crop = x[d["bbox_torch"]]
        dyn = {}
        for shape in [(96, 96, 96), (128, 128, 128), (96, 128, 160)]:
            xi = ref.normalize(ref.resize_nearest_exact(crop, shape), d["low"], d["high"])
            dyn["brain.onnx " + "x".join(map(str, shape))] = compare(tm, brain_s, xi)
        xi = ref.normalize(ref.resize_nearest_exact(x, (96, 96, 96)), d["low"], d["high"])
        dyn["bbox.onnx 96x96x96"] = compare(tb, bbox_s, xi)
        info["onnx_vs_torch_other_sizes"] = dyn
        print(f"[{name}] dynamic sizes: {dyn}")

    # the torch-free re-implementation, step by step against deepbet's own intermediates
    keep: dict = {}
    mask_np = ref.to_source_grid(ref.run(x, bbox_s, brain_s, keep=keep), img)
    steps = {
        "low_high_equal": bool(
            keep["low"] == np.float32(d["low"]) and keep["high"] == np.float32(d["high"])
        ),
        "stage1_input_max_abs_diff": float(np.abs(keep["input_small"] - d["bbox_input"]).max()),
        "stage1_mask_largest_component": agreement(keep["mask_small"], d["mask_small"]),
        "bbox_equal": [[s.start, s.stop] for s in keep["bbox"]] == d["bbox"],
        "stage2_input_max_abs_diff": (
            float(np.abs(keep["input_brain"] - d["brain_input"]).max())
            if keep["input_brain"].shape == d["brain_input"].shape
            else None
        ),
        "final_mask": agreement(mask_np, d["mask"]),
        "tiv_ml": ref.tiv_ml(mask_np, img),
        "seconds": {k: round(v, 2) for k, v in keep["timings_s"].items()},
    }
    info["numpy_onnxruntime_reimplementation"] = steps
    print(f"[{name}] numpy + onnxruntime re-implementation: {steps}")

    if full:  # what simpler node-side choices would change (each alone, the rest as deepbet)
        variants = {
            "stage1_face_connected_component": dict(stage1_fully_connected=False),
            "final_face_connected_component": dict(final_fully_connected=False),
            "fill_holes_fully_connected_background": dict(fill_fully_connected=True),
            "map_back_rational_nearest_index": dict(map_back_index=ref.rational_nearest_index),
            "postprocess_on_256_grid_then_map_back": dict(postprocess_on_model_grid=True),
            "postprocess_on_256_grid_face_connected": dict(
                postprocess_on_model_grid=True, final_fully_connected=False
            ),
        }
        info["node_variants_vs_deepbet"] = {}
        for vname, kw in variants.items():
            kv: dict = {}
            mv = ref.to_source_grid(ref.run(x, bbox_s, brain_s, keep=kv, **kw), img)
            info["node_variants_vs_deepbet"][vname] = dict(
                agreement(mv, d["mask"]),
                bbox_equal=[[s.start, s.stop] for s in kv["bbox"]] == d["bbox"],
            )
        print(f"[{name}] variants: {info['node_variants_vs_deepbet']}")

    # fill_voids against SimpleITK BinaryFillhole on deepbet's real pre-fill crop
    if "before_fill" in d:
        bf = d["before_fill"].astype(bool)
        import fill_voids

        fv = fill_voids.fill(bf)
        info["fill_voids_vs_sitk"] = {
            "filled_voxels": int(fv.sum() - bf.sum()),
            "face_connected_background (fullyConnected=False)": int(
                (ref.fill_holes(bf, False) != fv).sum()
            ),
            "fully_connected_background (fullyConnected=True)": int(
                (ref.fill_holes(bf, True) != fv).sum()
            ),
        }
        print(f"[{name}] fill_voids vs SimpleITK, voxels differing: {info['fill_voids_vs_sitk']}")

    if full:  # the real mask has no holes, so also random masks with many
        info["fill_voids_vs_sitk_random_masks"] = fill_check()
        print(
            f"[{name}] fill_voids vs SimpleITK on random masks: "
            f"{info['fill_voids_vs_sitk_random_masks']}"
        )

    out = HERE / "reference"
    out.mkdir(exist_ok=True)
    save_mask(d["mask"], img, out / f"{name}_mask.nii.gz")
    if full:
        # stage-1 mask after the largest component (128^3, deepbet order), bit-packed
        np.savez_compressed(
            out / f"{name}_stage1.npz",
            mask_small_packed=np.packbits(d["mask_small"].ravel()),
            shape=np.array(d["mask_small"].shape),
            low=d["low"],
            high=d["high"],
            bbox=np.array(d["bbox"]),
        )
    (out / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-reference", action="store_true", help="only (re)write the ONNX files")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--plain-instance-norm",
        action="store_true",
        help="keep the exporter's InstanceNormalization nodes (less accurate in "
        "onnxruntime, see rewrite_instance_norm)",
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        weights = locate_weights(Path(tmp))
        for name, (_, _, size) in WEIGHTS.items():
            t0 = time.perf_counter()
            export(weights[name], HERE / name, size, not args.plain_instance_norm)
            print(
                f"wrote {HERE / name}: {graph_io(HERE / name)} ({time.perf_counter() - t0:.1f} s)"
            )
        if args.skip_reference:
            bbox_s, brain_s = ref.sessions(HERE, args.threads)
            rng = np.random.default_rng(0)
            for name, s in (("bbox.onnx", bbox_s), ("brain.onnx", brain_s)):
                net = torch.jit.load(str(weights[name]), map_location="cpu").eval()
                x = rng.normal(0.449, 0.226, (64, 96, 128)).astype(np.float32)
                print(name, "random input:", compare(net, s, x))
            return 0
    for name, rel in INPUTS.items():
        reference(name, rel, HERE, args.threads, full=(name == "chris_t1"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
