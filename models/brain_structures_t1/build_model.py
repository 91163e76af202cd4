"""Build models/brain_structures_t1/model.onnx from brainchop's ``model30chan18cls``; record the
reference.

Run from the repository root:  python models/brain_structures_t1/build_model.py [options]

* reads ``$RADNODE_SHARED_MODELS/brainchop/model30chan18cls/model.json`` + ``model.bin`` (TF.js
  layers
  format, MIT; never copied here) and writes ``model.onnx`` (ONNX opset 17, ``onnx.helper``): input
  ``input`` (N, 1, D, H, W) float32, output ``logits`` (N, 18, D, H, W) float32, the last Conv3D's
  raw
  output (the TF.js model has no softmax; argmax is what brainchop uses);
* runs brainchop's web-app pipeline re-implemented in Python (``models/meshnet_build.py``, section
  3)
  with a PyTorch copy of the network as the reference, and ONNX Runtime on the same network input,
  on real data from ``$RADNODE_TEST_DATA``; writes ``reference/<case>_labels.nii.gz`` (uint8, on the
  input file's grid) and ``reference/<case>.json``.

brainchop's preprocessing for this model (brainchop-parameters.js id 4, "Subcortical + GWM (High
Mem,
Fast)": enableTranspose true, enableCrop true, cropPadding 0, autoThreshold 0.2, enableQuantileNorm
false, no pre-model), step by step -- each function named here cites the upstream code it
reproduces:

1. ``meshnet_build.is_conformed`` / ``niivue_conform``: main.js ``ensureConformed()``; a volume that
   is
   already 256^3, uint8 and LIA is used as it is, anything else goes through niivue
   ``conform(nii, toRAS=false)``: 256^3 1 mm LIA grid centred on the input centre, trilinear, uint8
   (uint8 inputs keep their values, truncated after interpolation; others: 0..255 robust rescale).
2. ``brainchop_slices``: tensor-utils.js ``getAllSlicesDataAsTF3D`` -> array [z, y, x] of the LIA
   volume.
3. ``minmax_normalise``: ``minMaxNormalizeVolumeData`` over the whole 256^3 volume -> [0, 1].
4. ``threshold_mask`` + ``crop_box``: ``applyMriThreshold`` (x > 0.2 * max) and ``cropAndGetCorner``
   (bounding box of that mask, padding 0); the crop is not resized.
5. ``enableTranspose``: the crop is transposed (axes reversed) -> the network sees [x, y, z] of the
   LIA volume: D towards patient Left, H towards Inferior, W towards Anterior.  In the node's terms
   the input orientation is "AIL" (i -> A, j -> I, k -> L; the array is [k, j, i]).
6. network, ``argMax`` over the 18 channels, transposed back, ``paste_back`` (``restoreTo256Cube``).
7. ``largest_component_26``: ``processSegmentationVolume`` with ``isPostProcessEnable``: only the
   largest 26-connected component of all non-zero labels together is kept.

Options: ``--orientation-check`` (torch on norm.mgz fed in three axis orders, Dice of cerebral white
matter against FreeSurfer), ``--crop-sensitivity`` (ONNX on the whole uncropped volume vs the
reference), ``--skip-reference`` (only write model.onnx).  The optional TF.js comparison runs when
``RADNODE_TFJS_NODE_MODULES`` names a node_modules holding ``@tensorflow/tfjs``.
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

UPSTREAM = "model30chan18cls"
PARAMS = mb.BrainchopParams(
    model_id=4,
    enable_transpose=True,
    enable_crop=True,
    crop_padding=0,
    auto_threshold=0.2,
    enable_quantile_norm=False,
    model_type="Atlas",
)
CASES = [
    ("norm", "mr_brain_freesurfer_niivue/norm.mgz"),
    ("chris_t1", "mr_brain_niivue/chris_t1.nii.gz"),
]
ASEG = "mr_brain_freesurfer_niivue/aparc.a2009s+aseg.mgz"

# colormap.json index -> name, and the FreeSurfer aseg labels each class stands for (left + right
# merged)
LABELS = [
    "Unknown",
    "Cerebral-White-Matter",
    "Cerebral-Cortex",
    "Lateral-Ventricle",
    "Inferior-Lateral-Ventricle",
    "Cerebellum-White-Matter",
    "Cerebellum-Cortex",
    "Thalamus",
    "Caudate",
    "Putamen",
    "Pallidum",
    "3rd-Ventricle",
    "4th-Ventricle",
    "Brain-Stem",
    "Hippocampus",
    "Amygdala",
    "Accumbens-area",
    "VentralDC",
]
ASEG_OF = {
    1: [2, 41],
    2: [3, 42, *range(11100, 11176), *range(12100, 12176)],
    3: [4, 43],
    4: [5, 44],
    5: [7, 46],
    6: [8, 47],
    7: [10, 49],
    8: [11, 50],
    9: [12, 51],
    10: [13, 52],
    11: [14],
    12: [15],
    13: [16],
    14: [17, 53],
    15: [18, 54],
    16: [26, 58],
    17: [28, 60],
}

STEPS = [
    "brainchop web-app pipeline re-implemented in Python "
    "(models/meshnet_build.py brainchop_pipeline), "
    "brainchop-parameters.js id 4: enableTranspose true, enableCrop true, cropPadding 0, "
    "autoThreshold 0.2, "
    "enableQuantileNorm false, no pre-model, brainChopOpts.isPostProcessEnable true",
    "slices = conformed uint8 volume as [z, y, x] float32 (getAllSlicesDataAsTF3D)",
    "min-max normalisation over the whole 256^3 volume (minMaxNormalizeVolumeData)",
    "crop to the bounding box of normalised > float32(0.2) "
    "(applyMriThreshold, cropAndGetCorner, padding 0)",
    "transpose (axes reversed): the network input is [x, y, z] of the LIA volume",
    "argmax over 18 logits, transposed back, pasted into a zero 256^3 volume (restoreTo256Cube)",
    "keep the largest 26-connected component of labels != 0 "
    "(bwlabel conn 26, binarize, onlyLargestClusterPerClass)",
]


def freesurfer_dice(labels: np.ndarray) -> dict:
    """Dice of each class against FreeSurfer's aseg (aparc.a2009s+aseg.mgz, norm.mgz's grid)."""
    import nibabel as nib

    aseg = np.asarray(nib.load(str(mb.test_data_dir() / ASEG)).dataobj)
    out = {}
    for c, fs in ASEG_OF.items():
        out[LABELS[c]] = round(mb.dice(labels == c, np.isin(aseg, fs)), 4)
    out["mean"] = round(float(np.mean([v for k, v in out.items()])), 4)
    return out


def orientation_check(res, spec) -> dict:
    """The torch network on norm.mgz's crop fed in three axis orders; WM Dice against aseg 2 + 41.

    The crop, min-max and post-processing are as brainchop's; only the array order the network sees
    changes.  Names are the node's orientation codes (array [k, j, i])."""
    import nibabel as nib

    aseg = np.asarray(nib.load(str(mb.test_data_dir() / ASEG)).dataobj)
    wm = np.isin(aseg, [2, 41])
    net = mb.torch_meshnet(spec)
    base = res.net_input  # [x, y, z] crop of the LIA volume (brainchop: transpose on)
    # candidate: (node code, permutation of [x, y, z] fed to the network)
    candidates = [("AIL", (0, 1, 2)), ("LIA", (2, 1, 0)), ("IAL", (0, 2, 1))]
    out = {}
    for code, perm in candidates:
        t0 = time.perf_counter()
        logits = mb.run_torch(net, np.ascontiguousarray(base.transpose(perm)))
        lab = logits.argmax(0).astype(np.uint8).transpose(np.argsort(perm))  # back to [x, y, z]
        full = mb.paste_back(lab.transpose(2, 1, 0), res.crop_start)  # [z, y, x]
        post = mb.largest_component_26(full).transpose(2, 1, 0)
        out[code] = {
            "network_sees": ["x (L)", "y (I)", "z (A)"]
            if perm == (0, 1, 2)
            else [["x (L)", "y (I)", "z (A)"][p] for p in perm],
            "white_matter_dice": round(mb.dice(post == 1, wm), 4),
            "mean_dice_17": freesurfer_dice(post)["mean"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"  orientation {code}: {out[code]}", flush=True)
    return out


def crop_sensitivity(res, onnx_path) -> dict:
    """ONNX on the whole normalised 256^3 volume (no crop) vs the reference: the crop's effect."""
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
        "agreement_within_reference_brain": float((lab == ref)[(ref > 0) | (lab > 0)].mean()),
        "uncropped_mean_dice_vs_freesurfer": freesurfer_dice(lab)["mean"],
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
        "brainchop model30chan18cls (MeshNet, MIT): 17 brain structures + background on a "
        "conformed T1 (256^3 1 mm, min-max 0..1, brain crop); input 'input' (N,1,D,H,W) = "
        "[x,y,z] of the LIA volume "
        "(node orientation AIL); output 'logits' (N,18,D,H,W), raw, argmax = label.",
    )
    if args.skip_reference:
        return
    ref_dir = PKG / "reference"
    ref_dir.mkdir(exist_ok=True)
    results = {}
    for case, rel in CASES:

        def extra(res, record, case=case):
            if case == "norm":
                record["dice_vs_freesurfer_aseg"] = freesurfer_dice(res.labels_conformed)
                print(f"[norm] Dice vs FreeSurfer: {record['dice_vs_freesurfer_aseg']}", flush=True)

        results[case] = mb.run_case(
            case, rel, PKG, spec, onnx_path, PARAMS, STEPS, args.threads, extra
        )

    res = results["norm"]["result"]
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
            "40x36x32 voxels at the centre of norm.mgz's network input (brainchop preprocessing)"
        )
        tf["compared_with"] = "torch reference logits"
        (ref_dir / "tfjs_check.json").write_text(json.dumps(tf, indent=2) + "\n")
    if args.orientation_check:
        (ref_dir / "orientation_check.json").write_text(
            json.dumps(orientation_check(res, spec), indent=2) + "\n"
        )
    if args.crop_sensitivity:
        cs = crop_sensitivity(res, onnx_path)
        print(f"crop sensitivity: {cs}", flush=True)
        (ref_dir / "crop_sensitivity.json").write_text(json.dumps(cs, indent=2) + "\n")


if __name__ == "__main__":
    main()
