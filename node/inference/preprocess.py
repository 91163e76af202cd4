"""From a source Volume to the model's input: its grid, then its intensities, as float32."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from node.imaging.errors import VolumeError
from node.imaging.resample import (
    conform_grid,
    reorient,
    resample,
    resample_inside,
    resample_onto,
    resampled_grid,
    resize_nearest,
)
from node.imaging.volume import Volume
from node.inference.manifest import InputSpec, ModelPackage, Normalization, load_package

# The largest grid a model may resample a series onto (512 MiB of float32): a 1 mm whole-body
# CT, far beyond the node's 3 mm and 1 mm models; workers.max_grid_voxels.
DEFAULT_MAX_GRID_VOXELS = 2**27
_SAMPLE = 4_000_000  # voxels used to estimate percentiles and z-score statistics


def grid_size(spec: InputSpec, volume: Volume) -> tuple[int, int, int]:
    """The (i, j, k) size of the grid :func:`model_grid` makes, computed without allocating."""
    if spec.conform is not None:
        return tuple(int(n) for n in spec.conform.size)  # type: ignore[return-value]
    size = volume.shape_ijk
    if spec.orientation != "native" or spec.spacing is not None:
        oriented = reorient(volume, spec.orientation)  # numpy views, no copy
        _, size = resampled_grid(oriented, spec.spacing)
    if spec.resize is not None:
        i_j_k = tuple(reversed(spec.resize))
        size = (*i_j_k, size[2]) if len(i_j_k) == 2 else i_j_k  # type: ignore[assignment]
    return size


def check_grids(package: ModelPackage, volume: Volume, max_voxels: int) -> None:
    """Refuse, before anything is allocated, a volume whose grid for any stage of the model
    (or of the model it runs after) would exceed ``max_voxels``: a few small images with a
    huge pixel spacing make a small series and a gigantic grid."""
    manifest = package.manifest
    if manifest.after:
        check_grids(load_package(package.directory.parent / manifest.after), volume, max_voxels)
    for stage in manifest.stages:
        size = grid_size(stage.input, volume)
        voxels = int(np.prod(size, dtype=np.int64))
        if voxels > max_voxels:
            name = manifest.name if len(manifest.stages) == 1 else \
                f"{manifest.name} (stage {stage.name})"
            raise VolumeError(
                f"{name} would resample this series ({volume.shape_ijk[0]} x "
                f"{volume.shape_ijk[1]} x {volume.shape_ijk[2]} voxels) onto a grid of "
                f"{size[0]} x {size[1]} x {size[2]} = {voxels:,} voxels, more than "
                f"workers.max_grid_voxels ({max_voxels:,})")


def model_grid(spec: InputSpec, volume: Volume) -> Volume:
    """The volume on the model's grid: a conformed fixed grid, or orientation, then spacing,
    then a fixed size.

    Resampling is linear unless the manifest says otherwise; unchanged grids are passed through
    without interpolation.
    """
    fill = spec.fill_value
    if spec.conform is not None:
        c = spec.conform
        grid = conform_grid(volume, c.size, c.spacing, c.orientation)
        if c.interpolation == "inside":
            return resample_inside(volume, grid, c.size)
        return resample_onto(volume, grid, c.size, c.interpolation,  # type: ignore[arg-type]
                             0.0 if fill is None else fill)
    direction = spec.orientation if spec.orientation != "native" else None
    out = volume
    if direction is not None or spec.spacing is not None:
        out = resample(out, spacing=spec.spacing, direction=direction, default_value=fill)
    if spec.resize is not None:
        i_j_k = tuple(reversed(spec.resize))  # array order (H, W) or (D, H, W) to (i, j, k)
        size = (*i_j_k, out.shape_ijk[2]) if len(i_j_k) == 2 else i_j_k
        if tuple(size) != out.shape_ijk:
            if spec.resize_interpolation == "nearest":
                out = resize_nearest(out, size)
            else:
                spacing = (None, None, out.spacing[2]) if len(i_j_k) == 2 else None
                out = resample(out, spacing=spacing, size=size, default_value=fill)
    return out


Statistics = Mapping[str, np.ndarray]  # where a normalisation may take its statistics from


def normalize(array: np.ndarray, spec: InputSpec, statistics: Statistics | None = None
              ) -> np.ndarray:
    """(C, D, H, W) float32: one channel per normalisation (or one copied to every channel).

    ``statistics`` holds the arrays a normalisation may take its statistics from instead of
    ``array`` (the crop): ``"grid"``, ``"source"``, ``"stage:<name>"``. A step's statistics
    come from its source as it is after the earlier steps of the chain (``then``).
    """
    out = np.empty((spec.channels, *array.shape), dtype=np.float32)
    for c in range(spec.channels):
        norm = spec.normalize[c if len(spec.normalize) > 1 else 0]
        if c > 0 and len(spec.normalize) == 1:
            out[c] = out[0]
            continue
        out[c] = array  # one cast, then in place
        done: list[Step] = []
        for step in (norm, *norm.then):
            reference = out[c]
            if step.statistics != "crop":
                if statistics is None or step.statistics not in statistics:
                    raise RuntimeError(f"normalisation statistics from {step.statistics!r} "
                                       "are not available")
                reference = statistics[step.statistics].astype(np.float32)
                for earlier in done:
                    earlier(reference)
            apply = prepare_normalization(step, reference)
            apply(out[c])
            done.append(apply)
    return out


Step = Callable[[np.ndarray], None]


def prepare_normalization(norm: Normalization, ref: np.ndarray) -> Step:
    """The normalisation with its statistics taken from ``ref``, as an in-place step."""
    p = norm.params
    if norm.kind == "window":
        lo, hi = p["center"] - p["width"] / 2, p["center"] + p["width"] / 2
        return _clip_scale(lo, hi, lo, 1.0 / (hi - lo))
    if norm.kind == "zscore":
        if "mean" in p and "std" in p:
            mean, std = p["mean"], p["std"]
        else:
            clipped = ref
            if "min" in p or "max" in p:
                clipped = np.clip(ref, p.get("min", -np.inf), p.get("max", np.inf))
            mean, std = _mean_std(clipped, int(p.get("ddof", 0)))
            mean, std = p.get("mean", mean), p.get("std", std or 1.0)
        return _clip_scale(p.get("min"), p.get("max"), mean, 1.0 / std)
    if norm.kind == "percentile":
        lo, hi = np.percentile(_sample(ref), [p["low"], p["high"]])
        return _clip_scale(lo, hi, lo, 1.0 / (hi - lo) if hi > lo else 0.0)
    if norm.kind == "minmax":
        lo, hi = float(ref.min()), float(ref.max())
        return _clip_scale(None, None, lo, 1.0 / (hi - lo) if hi > lo else 1.0)
    if norm.kind == "robust_range":
        out_max = p.get("out_max", 255.0)
        lo, scale = robust_range(ref, p.get("f_low", 0.0), p.get("f_high", 0.999),
                                 int(p.get("bins", 1000)), out_max)

        def conform_intensities(x: np.ndarray) -> None:  # niivue's scalecropUint8
            x -= np.float32(lo)
            if scale != 1.0:
                x *= np.float32(scale)
            np.clip(x, 0.0, out_max, out=x)
            np.trunc(x, out=x)

        return conform_intensities
    if norm.kind == "scale":
        factor, offset = p.get("factor", 1.0), p.get("offset", 0.0)

        def scale_offset(x: np.ndarray) -> None:
            if factor != 1.0:
                x *= factor
            if offset != 0.0:
                x += offset

        return scale_offset
    return lambda x: None


def _clip_scale(lo: float | None, hi: float | None, shift: float, factor: float) -> Step:
    """Clip to [lo, hi] (either may be None), subtract ``shift``, multiply by ``factor``."""

    def step(x: np.ndarray) -> None:
        if lo is not None or hi is not None:
            np.clip(x, -np.inf if lo is None else lo, np.inf if hi is None else hi, out=x)
        x -= np.float32(shift)
        x *= np.float32(factor)

    return step


def robust_range(data: np.ndarray, f_low: float, f_high: float, bins: int, out_max: float
                 ) -> tuple[float, float]:
    """FreeSurfer's intensity range when it conforms a T1, as niivue computes it for brainchop
    (``getScale``, a port of FastSurfer's ``getscale``): a volume of whole numbers within
    0..255 (stored as uint8) keeps its scale, from its minimum; otherwise the lower limit is where
    the cumulative count of a ``bins``-bin histogram reaches ``f_low`` of all voxels, the upper
    where it reaches all but ``1 - f_high`` of the non-zero ones. Returns (low, scale)."""
    g_min, g_max = float(data.min()), float(data.max())
    if _whole_0_255(data):
        return g_min, 1.0
    values = data.reshape(-1).astype(np.float64)
    bin_size = (g_max - g_min) / bins
    if bin_size <= 0:
        return g_min, 1.0
    index = np.minimum(np.floor((values - g_min) / bin_size), bins - 1).astype(np.int64)
    cs = np.cumsum(np.bincount(index, minlength=bins))
    low_bin = min(int(np.count_nonzero(cs < np.floor(f_low * values.size))), bins)
    nonzero = int(np.count_nonzero(np.abs(values) >= 1e-15))
    wanted = values.size - np.floor((1.0 - f_high) * nonzero)
    high_bin = min(int(np.count_nonzero(cs[1:] < wanted)), bins - 1)
    low, high = low_bin * bin_size + g_min, high_bin * bin_size + g_min
    return low, 1.0 if high == low else out_max / (high - low)


def _whole_0_255(data: np.ndarray) -> bool:
    """Whether the intensities are whole numbers within 0..255, as a uint8 volume's are."""
    sample = _sample(data)
    return float(data.min()) >= 0 and float(data.max()) <= 255 and bool(
        np.all(np.equal(np.mod(sample, 1), 0)))


def _mean_std(x: np.ndarray, ddof: int) -> tuple[float, float]:
    """Exact mean and standard deviation (float64 sums), ``ddof`` 1 as torch's ``std()``."""
    flat = x.reshape(-1)
    mean = float(flat.mean(dtype=np.float64))
    var = float(np.square(flat - np.float32(mean), dtype=np.float64).sum()) / max(
        1, flat.size - ddof)
    return mean, var ** 0.5


def _sample(x: np.ndarray) -> np.ndarray:
    """Every n-th voxel, so statistics of a large volume stay cheap (and deterministic)."""
    step = max(1, x.size // _SAMPLE)
    return x.reshape(-1)[::step]
