"""One stage of a package on a volume: grid, crop, intensities, network, decode, paste back.

A stage works on its own grid (``model_grid``); a crop cuts a box from it (from an intensity
threshold or an earlier stage's mask), optionally resized to a fixed shape; the network's output
is decoded on the crop and pasted back into the whole grid, so every stage hands on a label map or
a mask covering its grid. Masks of earlier stages are kept by name as Volumes, so a later stage on
another grid finds its box through patient coordinates.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, replace

import numpy as np

from node.imaging.resample import resample, resample_like, resize_nearest
from node.imaging.volume import Volume
from node.inference.execute import Predictor, run_slicewise, run_sliding_window, run_whole
from node.inference.manifest import CropSpec, Manifest, MaskSpec, Stage
from node.inference.postprocess import (
    activate_,
    components,
    decode_segmentation,
    fill_holes,
    label_dtype,
)
from node.inference.preprocess import model_grid, normalize
from node.inference.runtime import LoadedModel

Box = tuple[slice, slice, slice]  # [k, j, i] slices of a grid


@dataclass
class StageRun:
    """A stage's result on its whole grid: labels (last stage) or a 0/1 mask (earlier ones)."""

    grid: Volume  # the stage's grid, holding the label map or mask
    heat: np.ndarray | None  # detection heat map on the grid
    preprocess_s: float
    inference_s: float
    decode_s: float
    # The manifest's flag masks on the grid, by output name (bool; the last stage only).
    flag_masks: dict[str, np.ndarray] = field(default_factory=dict)


def run_stage(
    loaded: LoadedModel,
    volume: Volume,
    masks: Mapping[str, Volume],
    statistics: MutableMapping[str, np.ndarray],
    final: bool,
) -> StageRun:
    """Run one segmentation or detection stage on ``volume``.

    ``masks`` holds earlier stages' (and the prerequisite model's) masks by name;
    ``statistics`` gains this stage's input as ``"stage:<name>"`` for later stages.
    """
    stage, manifest = loaded.stage, loaded.package.manifest
    t0 = time.perf_counter()
    grid = model_grid(stage.input, volume)
    box = crop_box(stage.crop, grid, masks) if stage.crop is not None else None
    region = grid if box is None else grid.crop(box)
    if stage.crop is not None and stage.crop.resize is not None:
        size = tuple(reversed(stage.crop.resize))
        region = resize_nearest(region, size) if stage.crop.interpolation == "nearest" else \
            _resize_linear(region, size)
    sources = {"grid": grid.array, "source": volume.array}
    sources.update(statistics)
    x = normalize(region.array, stage.input, sources)
    statistics[f"stage:{stage.name}"] = region.array
    x, spatial = pad_to_multiple(x, stage.input.pad_multiple)
    t1 = time.perf_counter()
    predict = Predictor(loaded)
    labels, heat, inference_s, decode_s = _segment(predict, x, manifest, stage, final)
    del x
    t2 = time.perf_counter()
    labels = labels[tuple(slice(0, n) for n in spatial)]
    if heat is not None:
        heat = heat[tuple(slice(0, n) for n in spatial)]
    if stage.crop is not None and stage.crop.resize is not None:
        crop_grid = grid if box is None else grid.crop(box)
        labels = _back(region.with_array(labels), crop_grid, "nearest")
        if heat is not None:
            heat = _back(region.with_array(heat), crop_grid, "linear")
    if box is not None:
        labels = paste(labels, box, grid.array.shape)
        if heat is not None:
            heat = paste(heat, box, grid.array.shape)
    if stage.mask is not None:
        labels = clean_mask(labels, stage.mask)
    # Flags come only from a whole, uncropped run (the manifest allows no other): the masks
    # lie on the grid like the labels, less the padding.
    flag_masks = {name: m[0][tuple(slice(0, n) for n in spatial)]
                  for name, m in predict.flag_masks.items()}
    return StageRun(grid.with_array(labels), heat, t1 - t0, inference_s,
                    decode_s + time.perf_counter() - t2, flag_masks)


def _segment(predict: Predictor, x: np.ndarray, manifest: Manifest, stage: Stage, final: bool
             ) -> tuple[np.ndarray, np.ndarray | None, float, float]:
    """Label map (or mask) and detection heat map on the stage input, with seconds spent."""
    run = stage.run
    detection = final and stage.output.kind == "detection"
    # (every label has its channel but in a labelmap, where no channel is read)
    channels = [lab.channel for lab in manifest.labels if lab.channel is not None]

    def decode(y: np.ndarray) -> np.ndarray:
        return decode_segmentation(y, manifest) if final else decode_mask(y, stage)

    if run.mode == "slicewise":
        dtype = label_dtype(manifest) if final else np.uint8
        labels: np.ndarray = np.zeros(x.shape[1:], dtype=dtype)
        heat = np.zeros(x.shape[1:], dtype=np.float32) if detection else None
        inference_s = decode_s = 0.0
        t = time.perf_counter()
        for k0, y in run_slicewise(predict, x, run.batch_size):
            t_mid = time.perf_counter()
            inference_s += t_mid - t
            labels[k0 : k0 + y.shape[1]] = decode(y)  # activates y in place
            if heat is not None:
                heat[k0 : k0 + y.shape[1]] = y[channels].max(axis=0)
            t = time.perf_counter()
            decode_s += t - t_mid
        return labels, heat, inference_s, decode_s
    t = time.perf_counter()
    if run.mode == "sliding_window":
        assert run.patch_size is not None
        raw = run_sliding_window(predict, x, run.patch_size, run.overlap, run.gaussian_sigma,
                                 run.batch_size)
    else:
        raw = run_whole(predict, x)
    t_mid = time.perf_counter()
    labels = decode(raw)  # activates raw in place
    heat = raw[channels].max(axis=0) if detection else None
    return labels, heat, t_mid - t, time.perf_counter() - t_mid


def decode_mask(raw: np.ndarray, stage: Stage) -> np.ndarray:
    """(C, *spatial) raw scores (modified in place) to a 0/1 mask: the mask channel's
    activated value above the threshold (a label map: its values above it)."""
    spec = stage.mask or MaskSpec()
    if stage.output.activation == "labelmap":
        return (raw[0] > spec.threshold).astype(np.uint8)
    if raw.shape[0] <= spec.channel:
        raise RuntimeError(f"stage {stage.name}: output has {raw.shape[0]} channels but "
                           f"mask.channel is {spec.channel}")
    activate_(raw, stage.output.activation)
    return (raw[spec.channel] > spec.threshold).astype(np.uint8)


def clean_mask(mask: np.ndarray, spec: MaskSpec) -> np.ndarray:
    """An earlier stage's mask: largest component and filled holes, as the manifest asks."""
    if spec.largest_component and mask.any():
        mask = components(mask.astype(bool), largest=1,
                          full_connectivity=spec.connectivity == 26).astype(np.uint8)
    if spec.fill_holes and mask.any():
        mask = fill_holes(mask.astype(bool)).astype(np.uint8)
    return mask


def crop_box(spec: CropSpec, grid: Volume, masks: Mapping[str, Volume]) -> Box:
    """The [k, j, i] box of ``grid`` that the stage runs on.

    From a mask: the planes where more than ``min_plane_fraction`` of the voxels are in the
    mask, on the mask's own grid; its centre and size carried onto ``grid`` (scaled when the
    mask's grid is a resize of the same field of view, as deepbet's box is), grown by the
    margins, rounded half to even, and clipped to the grid. From a threshold: the voxels above
    ``fraction`` of the intensity range, grown by ``margin`` voxels (so is a mask on the
    grid itself without ``margin_fraction``: no rounding). With ``within``, the box is cut to
    the box of that mask grown by ``within_margin`` voxels.
    """
    box = _source_box(spec, grid, masks)
    if spec.within:
        bound = _source_box(replace(spec, source=spec.within, margin=spec.within_margin,
                                    margin_fraction=0.0, min_plane_fraction=0.0), grid, masks)
        box = tuple(slice(max(a.start, b.start), max(max(a.start, b.start), min(a.stop, b.stop)))
                    for a, b in zip(box, bound, strict=True))  # type: ignore[assignment]
    return box


def _source_box(spec: CropSpec, grid: Volume, masks: Mapping[str, Volume]) -> Box:
    shape = grid.array.shape
    if spec.source == "threshold":
        a = grid.array
        lo, hi = float(a.min()), float(a.max())
        inside = a > lo + spec.fraction * (hi - lo)
        return _grown(_extent(inside, 0.0), shape, spec)
    mask = masks.get(spec.source)
    if mask is None:
        raise RuntimeError(f"crop: no mask {spec.source!r} (an earlier stage or the 'after' "
                           "model must make it)")
    if not np.allclose(mask.direction, grid.direction, atol=1e-6):
        mask = resample_like(mask, grid, "nearest")
    lows, highs = _extent(mask.array > 0, spec.min_plane_fraction)
    m_shape, g_shape = np.array(mask.array.shape), np.array(shape)
    if _same_field_of_view(mask, grid) and np.array_equal(m_shape, g_shape) and \
            spec.margin_fraction == 0:
        return _grown((lows, highs), shape, spec)
    if _same_field_of_view(mask, grid):
        factor = (g_shape.astype(np.float32) / m_shape.astype(np.float32)).astype(np.float32)
        centre = (np.float32(0.5) * (np.asarray(lows, np.float32) + np.asarray(highs, np.float32))
                  ) * factor
        size = (np.asarray(highs, np.float32) - np.asarray(lows, np.float32)) * factor
    else:  # the box's edges carried onto the grid through patient coordinates
        edges = np.array([lows, highs], dtype=np.float64) - 0.5  # voxel boxes, [k, j, i]
        ijk = mask.index_to_patient(edges[:, ::-1])
        on_grid = grid.patient_to_index(ijk)[:, ::-1] + 0.5
        centre = on_grid.mean(axis=0).astype(np.float32)
        size = np.abs(on_grid[1] - on_grid[0]).astype(np.float32)
    return _box_from_centre(centre, size, g_shape, spec)


def _extent(inside: np.ndarray, min_fraction: float) -> tuple[list[int], list[int]]:
    """Per array axis, the first plane and one past the last plane whose fraction of voxels in
    ``inside`` exceeds ``min_fraction`` (0: any voxel)."""
    lows, highs = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        if min_fraction > 0:
            planes = np.nonzero(inside.mean(axis=others) > min_fraction)[0]
        else:
            planes = np.nonzero(inside.any(axis=others))[0]
        if planes.size == 0:
            raise RuntimeError("crop: the mask or threshold leaves nothing to crop to")
        lows.append(int(planes[0]))
        highs.append(int(planes[-1]) + 1)
    return lows, highs


def _grown(extent: tuple[list[int], list[int]], shape: tuple[int, ...], spec: CropSpec) -> Box:
    """The extent on its own grid grown by ``margin`` voxels, clipped (no rounding needed)."""
    lows, highs = extent
    out = [slice(max(0, lo - spec.margin), min(n, hi + spec.margin))
           for lo, hi, n in zip(lows, highs, shape, strict=True)]
    return (out[0], out[1], out[2])


def _box_from_centre(centre: np.ndarray, size: np.ndarray, shape: np.ndarray, spec: CropSpec
                     ) -> Box:
    size = size * np.float32(1 + 2 * spec.margin_fraction) + np.float32(2 * spec.margin)
    centre, size = np.round(centre), np.round(size)  # half to even, as torch rounds
    out = []
    for c, s, n in zip(centre, size, shape, strict=True):
        lo, hi = int(c - s / np.float32(2)), int(c + s / np.float32(2))
        out.append(slice(max(0, lo), min(int(n), hi)))
    return (out[0], out[1], out[2])


def _same_field_of_view(a: Volume, b: Volume) -> bool:
    """Whether ``a`` and ``b`` cover the same box of space along the same axes (one is a
    resize of the other)."""
    if not np.allclose(a.direction, b.direction, atol=1e-6):
        return False
    ea = [np.asarray(v.spacing) * np.asarray(v.shape_ijk) for v in (a, b)]
    corner = [v.index_to_patient(np.full(3, -0.5)) for v in (a, b)]
    return bool(np.allclose(ea[0], ea[1], atol=1e-3)
                and np.allclose(corner[0], corner[1], atol=1e-3))


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """``x`` (C, *spatial) padded at the end of each spatial axis up to a multiple of
    ``multiple`` with its minimum; returns it and the original spatial shape."""
    spatial = x.shape[1:]
    if multiple <= 1:
        return x, spatial
    pads = [(0, (-n) % multiple) for n in spatial]
    if not any(after for _, after in pads):
        return x, spatial
    return np.pad(x, [(0, 0), *pads], constant_values=float(x.min())), spatial


def paste(values: np.ndarray, box: Box, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` (the box's contents) in an otherwise zero array of ``shape``."""
    out = np.zeros(shape, dtype=values.dtype)
    out[box] = values
    return out


def _back(small: Volume, crop: Volume, interpolation: str) -> np.ndarray:
    """A resized crop's output back onto the crop's own voxels."""
    if interpolation == "nearest":
        return resize_nearest(small, crop.shape_ijk).array
    return resample_like(small, crop, "linear").array


def _resize_linear(volume: Volume, size: tuple[int, ...]) -> Volume:
    return resample(volume, size=size)
