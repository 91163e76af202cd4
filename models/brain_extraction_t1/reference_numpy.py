"""deepbet 1.0.2 brain extraction re-implemented without torch (numpy + onnxruntime + SimpleITK).

This is the executable specification of what the node has to do with ``bbox.onnx`` and
``brain.onnx`` to reproduce ``deepbet.BrainExtraction().run()`` (deepbet/bet.py, deepbet/utils.py).
Every step names the deepbet line it mirrors. Arrays are in deepbet's order: the canonical
(``nib.as_closest_canonical``) voxel array ``x[i, j, k]``, i towards patient Right, j Anterior,
k Superior, exactly as nibabel returns it; that array is fed to the networks as (D, H, W).

    python models/brain_extraction_t1/reference_numpy.py [input.nii.gz] [--compare mask.nii.gz]

compares with ``reference/chris_t1_mask.nii.gz`` by default.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

SMALL_SHAPE = (128, 128, 128)  # stage 1 (bbox.onnx), whole field of view
SHAPE = (256, 256, 256)  # stage 2 (brain.onnx), on the crop
Q_LOW, Q_HIGH = 0.005, 0.995  # torch.quantile on the 128^3 stage-1 input
BBOX_THRESHOLD = 0.02  # get_bbox: planes whose mean of the stage-1 mask exceeds this
BBOX_MARGIN = 0.1  # get_bbox_with_margin: size * (1 + 2 * margin)
MASK_THRESHOLD = 0.5  # run(threshold=.5): probability > threshold (strict)
NORM_SCALE, NORM_SHIFT = 0.226, 0.449  # normalize(): .226 * z + .449

F32 = np.float32


# --------------------------------------------------------------------------- resampling
def rational_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """The textbook pixel-centre nearest neighbour, min(floor((d + 0.5) * n_in / n_out), n_in - 1)
    in exact integer arithmetic; NOT bit-exact with torch (see nearest_exact_index)."""
    d = np.arange(n_out, dtype=np.int64)
    return np.minimum(((2 * d + 1) * n_in) // (2 * n_out), n_in - 1)


def nearest_exact_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of every output index, bit-exact with torch
    ``F.interpolate(mode='nearest-exact')``
    on the CPU (checked against torch 2.13 for every n_in <= 1100, n_out <= 600).

    scale = float32(n_in) / float32(n_out)                  (float32 division)
    real  = float32((d + 0.5) * scale - 0.5)  (double product, rounded to float32), clamped >= 0
    src   = min(floor(float32(real + 0.5)), n_in - 1)
    Mathematically src = min(floor((d + 0.5) * n_in / n_out), n_in - 1); the float32 scale makes
    it differ from the exact rational value for some sizes (e.g. 128 -> 41), by one index.
    """
    d = np.arange(n_out, dtype=np.float64)
    scale = F32(n_in) / F32(n_out)
    real = np.maximum(((d + 0.5) * np.float64(scale) - 0.5).astype(F32), F32(0))
    src = np.floor((real.astype(np.float64) + 0.5).astype(F32)).astype(np.int64)
    return np.minimum(src, n_in - 1)


def resize_nearest_exact(x: np.ndarray, shape, index=nearest_exact_index) -> np.ndarray:
    """``F.interpolate(x[None, None], shape, mode='nearest-exact')[0, 0]``: separable, per axis."""
    idx = [index(n, m) for n, m in zip(x.shape, shape, strict=True)]
    return x[np.ix_(*idx)]


# --------------------------------------------------------------------------- intensities
def torch_quantile(x: np.ndarray, q: float) -> np.float32:
    """``torch.quantile(x, q)`` (interpolation='linear') on float32, as torch computes it:
    rank = float32(q) * (n - 1) in float32; below = sorted[int(rank)], above = sorted[ceil(rank)];
    w = rank - int(rank); torch.lerp: below + w * (above - below) if w < 0.5
    else above - (above - below) * (1 - w), all float32. numpy's default (linear) gives the same
    value up to float rounding of the rank."""
    v = np.sort(x.astype(F32, copy=False).ravel())
    rank = F32(F32(q) * F32(v.size - 1))
    lo = int(np.floor(rank))
    hi = int(np.ceil(rank))
    w = F32(rank - F32(lo))
    a, b = v[lo], v[hi]
    diff = F32(b - a)
    if abs(w) < 0.5:
        return F32(a + F32(w * diff))
    return F32(b - F32(diff * F32(F32(1) - w)))


def normalize(x: np.ndarray, low, high) -> np.ndarray:
    """deepbet.utils.normalize: x = clip((x - low) / (high - low), 0, 1);
    z = (x - mean(x)) / std(x, ddof=1)  (torch's x.std() is the unbiased one);
    return .226 z + .449.
    Mean and std are taken over the clipped volume itself (stage 2: over the 256^3 crop)."""
    low, high = F32(low), F32(high)
    x = (x.astype(F32, copy=False) - low) / F32(high - low)
    x = np.clip(x, F32(0), F32(1))
    x64 = x.astype(np.float64)
    mean = F32(x64.mean())
    std = F32(x64.std(ddof=1))
    z = (x - mean) / std
    return (F32(NORM_SCALE) * z + F32(NORM_SHIFT)).astype(F32)


# --------------------------------------------------------------------------- binary morphology
def largest_component(mask: np.ndarray, fully_connected: bool = True) -> np.ndarray:
    """deepbet.utils.keep_largest_connected_component: cc3d.connected_components (default 26-
    connectivity = SimpleITK fullyConnected=True), keep the label with most voxels."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    cc = sitk.GetArrayFromImage(sitk.ConnectedComponent(img, fully_connected))
    counts = np.bincount(cc.ravel())
    if counts.size <= 1:
        raise ValueError("empty mask: no component to keep")
    counts[0] = 0
    return cc == int(counts.argmax())


def fill_holes(mask: np.ndarray, fully_connected: bool = False) -> np.ndarray:
    """fill_voids.fill: background not connected to the array's faces becomes foreground.
    fill_voids floods the background with face (6-) connectivity, which is SimpleITK
    BinaryFillhole(fullyConnected=False): on 30 random masks (115k voxels filled) the two differ
    at 14 voxels, all on the array's border (fill_voids also fills a few background voxels lying
    on the border, mostly on its edges); fullyConnected=True differs almost everywhere. deepbet
    fills the bounding-box crop, so only a mask touching the crop's faces could tell them apart."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(mask, dtype=np.uint8))
    out = sitk.BinaryFillhole(img, fullyConnected=fully_connected, foregroundValue=1)
    return sitk.GetArrayFromImage(out).astype(bool)


# --------------------------------------------------------------------------- bounding box
def get_bbox_with_margin(mask_small: np.ndarray, shape, margin: float = BBOX_MARGIN):
    """BrainExtraction.get_bbox + get_bbox_with_margin, in float32 like torch.

    per axis a:  profile = mean of mask_small over the other two axes (float32)
                 r = indices where profile > 0.02  (error if none)
                 center = (max(r) + 1 + min(r)) / 2 ; size = max(r) + 1 - min(r)
                 scale = float32(shape[a]) / float32(mask_small.shape[a])  (= shape/128)
                 center *= scale ; size *= scale ; size *= float32(1 + 2*0.1)  (1.2000000477)
                 center, size = round_half_even(center), round_half_even(size)
                 start = trunc(center - size / 2) ; stop = trunc(center + size / 2)
                 (python int() of a float32: towards 0)
                 slice(max(0, start), min(shape[a], stop))
    """
    m = mask_small.astype(F32)
    bbox = []
    for a in range(3):
        other = tuple(b for b in range(3) if b != a)
        prof = m.mean(axis=other, dtype=np.float64).astype(F32)
        r = np.nonzero(prof > BBOX_THRESHOLD)[0]
        if r.size == 0:
            raise ValueError("Not enough foreground to calculate bounding box")
        center = F32((r.max() + 1 + r.min()) / 2)
        size = F32(r.max() + 1 - r.min())
        scale = F32(shape[a]) / F32(mask_small.shape[a])
        center = F32(scale * center)
        size = F32(scale * size)
        size = F32(F32(F32(1) + F32(2) * F32(margin)) * size)
        center, size = np.round(center), np.round(size)  # numpy rounds half to even, like torch
        start = int(F32(center - F32(size / F32(2))))
        stop = int(F32(center + F32(size / F32(2))))
        bbox.append(slice(max(0, start), min(int(shape[a]), stop), 1))
    return tuple(bbox)


# --------------------------------------------------------------------------- networks
def sessions(folder: Path = HERE, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    prov = ["CPUExecutionProvider"]
    return (
        ort.InferenceSession(str(folder / "bbox.onnx"), so, providers=prov),
        ort.InferenceSession(str(folder / "brain.onnx"), so, providers=prov),
    )


def foreground_probability(session, x: np.ndarray) -> np.ndarray:
    """Run a network on a (D, H, W) float32 volume; channel 1 of its softmax output."""
    out = session.run(["output"], {"input": x[None, None].astype(F32, copy=False)})[0]
    return out[0, 1]


# --------------------------------------------------------------------------- the whole run
def run(
    x: np.ndarray,
    bbox_session,
    brain_session,
    threshold: float = MASK_THRESHOLD,
    stage1_fully_connected: bool = True,
    final_fully_connected: bool = True,
    fill_fully_connected: bool = False,
    postprocess_on_model_grid: bool = False,
    map_back_index=nearest_exact_index,
    keep: dict | None = None,
) -> np.ndarray:
    """BrainExtraction.run_model + run's threshold + postprocess(n_dilate=0), on the canonical
    array ``x`` (float32, deepbet's i,j,k order). Returns the boolean mask on x's grid.
    The defaults are deepbet's; the other settings measure what a simpler node pipeline would
    change (face-connected components, post-processing on the 256^3 grid before mapping back,
    a different nearest-neighbour index formula for the way back).
    ``keep``, if a dict, receives the intermediate results."""
    keep = {} if keep is None else keep
    t0 = time.perf_counter()
    x = np.nan_to_num(x.astype(F32, copy=False))  # torch.nan_to_num
    # stage 1: whole field of view at 128^3
    x_small = resize_nearest_exact(x, SMALL_SHAPE)
    low, high = torch_quantile(x_small, Q_LOW), torch_quantile(x_small, Q_HIGH)
    in1 = normalize(x_small, low, high)
    t1 = time.perf_counter()
    p_small = foreground_probability(bbox_session, in1)
    t2 = time.perf_counter()
    mask_small = largest_component(p_small > 0.5, stage1_fully_connected)
    bbox = get_bbox_with_margin(mask_small, x.shape)
    # stage 2: the crop at 256^3, normalised with stage 1's low/high but its own mean/std
    crop = x[bbox]
    in2 = normalize(resize_nearest_exact(crop, SHAPE), low, high)
    t3 = time.perf_counter()
    p_brain = foreground_probability(brain_session, in2)
    t4 = time.perf_counter()
    # back to the crop's own grid (nearest-exact on the probabilities), pasted into zeros
    if postprocess_on_model_grid:  # not deepbet's order: for comparison only
        sub = largest_component(p_brain > threshold, final_fully_connected)
        sub = fill_holes(sub, fill_fully_connected)
        mask = np.zeros(x.shape, bool)
        mask[bbox] = resize_nearest_exact(sub, crop.shape, map_back_index)
    else:
        prob = np.zeros(x.shape, F32)
        prob[bbox] = resize_nearest_exact(p_brain, crop.shape, map_back_index)
        mask = prob > threshold
        # postprocess, inside the bounding box only, on the source grid
        sub = largest_component(mask[bbox], final_fully_connected)
        sub = fill_holes(sub, fill_fully_connected)
        mask[bbox] = sub
    t5 = time.perf_counter()
    keep.update(
        low=low,
        high=high,
        x_small=x_small,
        input_small=in1,
        prob_small=p_small,
        mask_small=mask_small,
        bbox=bbox,
        input_brain=in2,
        prob_brain=p_brain,
        timings_s=dict(
            preprocess_1=t1 - t0,
            bbox_net=t2 - t1,
            preprocess_2=t3 - t2,
            brain_net=t4 - t3,
            postprocess=t5 - t4,
            total=t5 - t0,
        ),
    )
    return mask


def load_canonical(path):
    """deepbet's input: ``nib.as_closest_canonical(img).get_fdata(dtype=float32)`` (first volume
    of a 4D image). Returns (x, img)."""
    import nibabel as nib

    img = nib.load(str(path))
    x = nib.as_closest_canonical(img).get_fdata(dtype=np.float32)
    if len(img.shape) == 4:
        x = x[..., 0]
    return x, img


def to_source_grid(mask_canonical: np.ndarray, img) -> np.ndarray:
    """deepbet.utils.reoriented_nifti: the canonical array back to the input's own voxel order."""
    import nibabel as nib

    ornt = nib.io_orientation(img.affine)
    back = nib.orientations.ornt_transform([[0, 1], [1, 1], [2, 1]], ornt)
    return nib.apply_orientation(mask_canonical, back)


def tiv_ml(mask: np.ndarray, img) -> float:
    """run(): tiv = 1e-3 * mask.sum() * prod(img.header.get_zooms()[:3])  (ml = cm^3)."""
    return float(1e-3 * mask.sum() * np.prod(img.header.get_zooms()[:3]))


def main(argv=None) -> int:
    data = Path(os.environ.get("RADNODE_TEST_DATA", HERE.parents[2] / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", nargs="?", default=str(data / "mr_brain_niivue" / "chris_t1.nii.gz"))
    ap.add_argument("--compare", default=str(HERE / "reference" / "chris_t1_mask.nii.gz"))
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    import nibabel as nib

    x, img = load_canonical(args.input)
    keep: dict = {}
    mask = to_source_grid(run(x, *sessions(threads=args.threads), keep=keep), img)
    print(
        f"bbox {keep['bbox']}  low {keep['low']} high {keep['high']}  "
        f"TIV {tiv_ml(mask, img):.3f} ml  timings {keep['timings_s']}"
    )
    if args.compare and Path(args.compare).is_file():
        ref = np.asarray(nib.load(args.compare).dataobj).astype(bool)
        same = float((ref == mask).mean())
        dice = 2 * (ref & mask).sum() / (ref.sum() + mask.sum())
        print(
            f"vs {args.compare}: {100 * same:.5f} % voxels identical, "
            f"{int((ref != mask).sum())} differ, Dice {dice:.6f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
