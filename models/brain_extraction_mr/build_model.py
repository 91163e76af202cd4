"""Build models/brain_extraction_mr/model.onnx from brainchop's ``mindgrab``; record the reference.

Run from the repository root:  python models/brain_extraction_mr/build_model.py [options]

* reads ``$RADNODE_SHARED_MODELS/brainchop/mindgrab/model.json`` + ``model.bin`` (TF.js layers
  format,
  MIT; never copied here) and writes ``model.onnx`` (ONNX opset 17, ``onnx.helper``): input
  ``input``
  (N, 1, D, H, W) float32, output ``logits`` (N, 2, D, H, W) float32 (raw; channel 1 = brain).
  mindgrab's 25 hidden Conv3D layers are named ``*_gn``: brainchop follows each with an instance
  normalisation that model.json does not describe (tensor-utils.js ``LayerNormInPlace``: per
  channel,
  mean and biased variance over the whole D, H, W of the tensor, eps 1e-5, no affine); the graph
  writes it out with ReduceMean one axis at a time (ONNX Runtime's ``InstanceNormalization`` sums
  the ~10^7 voxels of a brain crop too inexactly in float32).  Activations are exact (Erf) GELU.
  The normalisation makes
  the output depend on the whole input block: the node must feed exactly brainchop's crop.
* runs brainchop's web-app pipeline re-implemented in Python (``models/meshnet_build.py``, section
  3)
  with a PyTorch copy of the network as the reference and ONNX Runtime on the same network input,
  on real data from ``$RADNODE_TEST_DATA``; writes ``reference/<case>_labels.nii.gz`` (uint8 brain
  mask 0/1 on the input file's grid), ``reference/<case>_labels_conformed.nii.gz`` (the same on the
  256^3 LIA model grid) and ``reference/<case>.json``.

brainchop's preprocessing for this model (brainchop-parameters.js id 16, "omnimodal Skull Strip
(High
Mem, Fast)", type Brain_Extraction: enableTranspose true, enableCrop true, cropPadding 20,
autoThreshold 0.5, enableQuantileNorm false, no pre-model), step by step (functions in
meshnet_build):

1. ``is_conformed`` / ``niivue_conform``: main.js ``ensureConformed()`` -> niivue ``conform(nii,
   false)``
   unless the volume is already 256^3 uint8 LIA: 256^3 1 mm LIA grid centred on the input centre,
   trilinear, uint8 (uint8 input values kept, truncated; other types robustly rescaled to 0..255).
2. ``brainchop_slices``: ``getAllSlicesDataAsTF3D`` -> [z, y, x] of the LIA volume, float32.
3. ``minmax_normalise``: ``minMaxNormalizeVolumeData`` over the whole 256^3 volume -> [0, 1].
4. ``threshold_mask`` + ``crop_box``: ``applyMriThreshold`` (x > 0.5 * max) and
   ``cropAndGetCorner``:
   bounding box of the mask widened by 20 voxels per side (image content, clamped to 0..255).
5. ``enableTranspose``: axes reversed -> the network sees [x, y, z] of the LIA volume (D -> Left,
   H -> Inferior, W -> Anterior); node orientation code "AIL".
6. network, ``argMax`` of the 2 logits, transposed back, ``paste_back`` (``restoreTo256Cube``).
7. ``largest_component_26``: ``processSegmentationVolume``: the largest 26-connected component of
   the
   non-zero voxels.  brainchop then shows ``conformed image * mask`` (Brain_Extraction); the label
   map recorded here is the mask itself (1 = brain).

Options: ``--orientation-check`` (torch on norm.mgz in two axis orders, Dice against FreeSurfer's
brain ``aseg > 0``), ``--crop-sensitivity`` (ONNX on the whole uncropped volume vs the reference),
``--skip-reference``.  The optional TF.js comparison runs when ``RADNODE_TFJS_NODE_MODULES`` names a
node_modules holding ``@tensorflow/tfjs``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PKG = Path(__file__).resolve().parent
sys.path.insert(0, str(PKG.parent))

import meshnet_build as mb  # noqa: E402

UPSTREAM = "mindgrab"
PARAMS = mb.BrainchopParams(
    model_id=16,
    enable_transpose=True,
    enable_crop=True,
    crop_padding=20,
    auto_threshold=0.5,
    enable_quantile_norm=False,
    model_type="Brain_Extraction",
)
CASES = [
    ("chris_t1", "mr_brain_niivue/chris_t1.nii.gz"),
    ("flair", "mr_brain_niivue/FLAIR.nii.gz"),
]
LABELS = ["background", "brain mask"]  # mindgrab/colormap.json
STEPS = [
    "brainchop web-app pipeline re-implemented in Python "
    "(models/meshnet_build.py brainchop_pipeline), "
    "brainchop-parameters.js id 16: enableTranspose true, enableCrop true, cropPadding 20, "
    "autoThreshold 0.5, "
    "enableQuantileNorm false, no pre-model, brainChopOpts.isPostProcessEnable true",
    "slices = conformed uint8 volume as [z, y, x] float32 (getAllSlicesDataAsTF3D)",
    "min-max normalisation over the whole 256^3 volume (minMaxNormalizeVolumeData)",
    "crop to the bounding box of normalised > 0.5, widened by 20 voxels per side within 0..255 "
    "(applyMriThreshold, cropAndGetCorner)",
    "transpose (axes reversed): the network input is [x, y, z] of the LIA volume",
    "network with instance normalisation (eps 1e-5) after every *_gn conv (LayerNormInPlace), "
    "exact GELU",
    "argmax over 2 logits, transposed back, pasted into a zero 256^3 volume (restoreTo256Cube)",
    "keep the largest 26-connected component of labels != 0 "
    "(bwlabel conn 26, binarize, onlyLargestClusterPerClass)",
    "label map = that mask (brainchop displays conformed image * mask for Brain_Extraction)",
]


def extra(res, record) -> None:
    vox = int((res.labels_conformed > 0).sum())
    record["brain_volume_ml_model_grid"] = round(vox / 1000.0, 1)  # 1 mm^3 voxels


def orientation_check(spec) -> dict:
    """mindgrab on norm.mgz (FreeSurfer-conformed, skull-stripped) in two axis orders; Dice of the
    mask against FreeSurfer's aseg > 0 (aparc.a2009s+aseg.mgz)."""
    import nibabel as nib

    raw, scaled, affine, _dt, _ = mb.load_volume(
        mb.test_data_dir() / "mr_brain_freesurfer_niivue/norm.mgz"
    )
    aseg = np.asarray(
        nib.load(
            str(mb.test_data_dir() / "mr_brain_freesurfer_niivue/aparc.a2009s+aseg.mgz")
        ).dataobj
    )
    brain = aseg > 0
    net = mb.torch_meshnet(spec)
    out = {}
    for code, transpose in (("AIL", True), ("LIA", False)):
        params = mb.BrainchopParams(**{**PARAMS.__dict__, "enable_transpose": transpose})
        t0 = time.perf_counter()
        res = mb.brainchop_pipeline(raw, scaled, affine, params, lambda x: mb.run_torch(net, x))
        out[code] = {
            "enableTranspose": transpose,
            "dice_vs_aseg_brain": round(mb.dice(res.labels_conformed > 0, brain), 4),
            "mask_ml": round(float((res.labels_conformed > 0).sum()) / 1000, 1),
            "aseg_brain_ml": round(float(brain.sum()) / 1000, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"  orientation {code}: {out[code]}", flush=True)
    return out


def crop_sensitivity(res, onnx_path) -> dict:
    """ONNX on the whole normalised 256^3 volume (no crop) vs the reference."""
    norm = mb.minmax_normalise(mb.brainchop_slices(res.conformed))
    sess = mb.onnx_session(onnx_path)
    t0 = time.perf_counter()
    logits = mb.run_onnx(sess, np.ascontiguousarray(norm.transpose(2, 1, 0)))
    secs = time.perf_counter() - t0
    lab = mb.largest_component_26(logits.argmax(0).astype(np.uint8).transpose(2, 1, 0)).transpose(
        2, 1, 0
    )
    ref = res.labels_conformed
    return {
        "agreement_whole_volume": float((lab == ref).mean()),
        "differing_voxels": int((lab != ref).sum()),
        "dice_uncropped_vs_reference": round(mb.dice(lab > 0, ref > 0), 4),
        "onnxruntime_seconds_256cube": round(secs, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--orientation-check", action="store_true")
    ap.add_argument("--crop-sensitivity", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    spec, onnx_path = mb.build_package(
        PKG,
        UPSTREAM,
        "brainchop mindgrab (MeshNet with instance normalisation and GELU, MIT): brain extraction "
        "on MR of any contrast, conformed (256^3 1 mm, min-max 0..1, crop with 20 voxels margin); "
        "input 'input' (N,1,D,H,W) = [x,y,z] of the LIA volume (node orientation AIL); "
        "output 'logits' (N,2,D,H,W), raw, "
        "argmax = label (1 = brain).",
    )
    if args.skip_reference:
        return
    ref_dir = PKG / "reference"
    ref_dir.mkdir(exist_ok=True)
    results = {}
    for case, rel in CASES:
        results[case] = mb.run_case(
            case, rel, PKG, spec, onnx_path, PARAMS, STEPS, args.threads, extra
        )

    res = results["chris_t1"]["result"]
    c = [s // 2 for s in res.net_input.shape]
    patch = np.ascontiguousarray(
        res.net_input[c[0] - 20 : c[0] + 20, c[1] - 18 : c[1] + 18, c[2] - 16 : c[2] + 16]
    )
    tf = mb.tfjs_check(
        mb.shared_models_dir() / "brainchop" / UPSTREAM,
        patch,
        mb.run_torch(mb.torch_meshnet(spec), patch),
    )
    print(f"TF.js check: {tf}", flush=True)
    if "skipped" not in tf:
        tf["patch"] = (
            "40x36x32 voxels at the centre of chris_t1's network input (brainchop preprocessing)"
        )
        tf["compared_with"] = (
            "torch reference logits (instance normalisation over the patch itself)"
        )
        (ref_dir / "tfjs_check.json").write_text(json.dumps(tf, indent=2) + "\n")
    if args.orientation_check:
        (ref_dir / "orientation_check.json").write_text(
            json.dumps(orientation_check(spec), indent=2) + "\n"
        )
    if args.crop_sensitivity:
        out = {}
        for case in results:
            out[case] = crop_sensitivity(results[case]["result"], onnx_path)
            print(f"crop sensitivity {case}: {out[case]}", flush=True)
        (ref_dir / "crop_sensitivity.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
