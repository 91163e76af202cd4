"""From a source Volume to the model's input: its grid, then its intensities, as float32."""

from __future__ import annotations

import numpy as np

from node.imaging.resample import resample
from node.imaging.volume import Volume
from node.inference.manifest import InputSpec, Normalization

_SAMPLE = 4_000_000  # voxels used to estimate percentiles and z-score statistics


def model_grid(spec: InputSpec, volume: Volume) -> Volume:
    """The volume on the model's grid: orientation, then spacing, then a fixed size.

    Resampling is linear; unchanged grids are passed through without interpolation.
    """
    direction = spec.orientation if spec.orientation != "native" else None
    fill = spec.fill_value
    out = volume
    if direction is not None or spec.spacing is not None:
        out = resample(out, spacing=spec.spacing, direction=direction, default_value=fill)
    if spec.resize is not None:
        i_j_k = tuple(reversed(spec.resize))  # array order (H, W) or (D, H, W) to (i, j, k)
        size = (*i_j_k, out.shape_ijk[2]) if len(i_j_k) == 2 else i_j_k
        if tuple(size) != out.shape_ijk:
            spacing = (None, None, out.spacing[2]) if len(i_j_k) == 2 else None
            out = resample(out, spacing=spacing, size=size, default_value=fill)
    return out


def normalize(array: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(C, D, H, W) float32: one channel per normalisation (or one copied to every channel)."""
    out = np.empty((spec.channels, *array.shape), dtype=np.float32)
    for c in range(spec.channels):
        norm = spec.normalize[c if len(spec.normalize) > 1 else 0]
        if c > 0 and len(spec.normalize) == 1:
            out[c] = out[0]
            continue
        out[c] = array  # one cast, then in place
        apply_normalization(out[c], norm)
    return out


def apply_normalization(x: np.ndarray, norm: Normalization) -> None:
    """Normalise a float32 array in place."""
    p = norm.params
    if norm.kind == "window":
        lo, hi = p["center"] - p["width"] / 2, p["center"] + p["width"] / 2
        np.clip(x, lo, hi, out=x)
        x -= lo
        x *= 1.0 / (hi - lo)
    elif norm.kind == "zscore":
        if "min" in p or "max" in p:
            np.clip(x, p.get("min", -np.inf), p.get("max", np.inf), out=x)
        if "mean" in p and "std" in p:
            mean, std = p["mean"], p["std"]
        else:
            sample = _sample(x)
            mean = p.get("mean", float(sample.mean()))
            std = p.get("std", float(sample.std()) or 1.0)
        x -= mean
        x *= 1.0 / std
    elif norm.kind == "percentile":
        lo, hi = np.percentile(_sample(x), [p["low"], p["high"]])
        np.clip(x, lo, hi, out=x)
        x -= lo
        x *= 1.0 / (hi - lo) if hi > lo else 0.0
    elif norm.kind == "scale":
        if p.get("factor", 1.0) != 1.0:
            x *= p["factor"]
        if p.get("offset", 0.0) != 0.0:
            x += p["offset"]


def _sample(x: np.ndarray) -> np.ndarray:
    """Every n-th voxel, so statistics of a large volume stay cheap (and deterministic)."""
    step = max(1, x.size // _SAMPLE)
    return x.reshape(-1)[::step]
