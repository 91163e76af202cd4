"""``run_model``: a source Volume in, a ModelOutput on the same grid out.

For each stage (``node.inference.stages``): grid, crop, intensities -> ONNX (whole, slice-wise or
sliding window) -> decode and paste back; then, on the last stage's grid, the per-label clean-up,
the steps on the union of labels, left/right split -> back onto the source grid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial

import numpy as np

from node.imaging.resample import Interpolation, resample_like
from node.imaging.volume import Volume
from node.inference.execute import Predictor, run_slicewise, run_whole
from node.inference.manifest import Manifest, MapBack, ModelPackage, load_package
from node.inference.midline import report_values
from node.inference.output import Box, ModelOutput, RaisedFlag, Timings
from node.inference.postprocess import activate_, clean_labels, clean_union
from node.inference.preprocess import model_grid, normalize
from node.inference.runtime import SessionRegistry, default_registry
from node.inference.stages import run_stage

# A manifest's output.map_back, as the resampler names it.
_MAP_BACK: dict[MapBack, Interpolation] = {
    MapBack.NEAREST: "nearest", MapBack.LABEL_LINEAR: "label_linear",
}


def run_model(
    package: ModelPackage,
    volume: Volume,
    registry: SessionRegistry | None = None,
    earlier: Mapping[str, ModelOutput] | None = None,
) -> ModelOutput:
    """Run one model (every stage) on one volume; every result is on ``volume``'s own grid.

    A model declared ``after`` another runs that one first, unless ``earlier`` already holds its
    output for this volume; its mask is then available to crops and ``postprocess.within``. The
    timings include the earlier model's when this run ran it.
    """
    manifest = package.manifest
    registry = registry or default_registry()
    masks: dict[str, Volume] = {}
    prerequisite = None
    seconds = [0.0, 0.0, 0.0]
    if manifest.after:
        prerequisite = (earlier or {}).get(manifest.after)
        if prerequisite is None:
            prerequisite = run_model(load_package(package.directory.parent / manifest.after),
                                     volume, registry)
            t = prerequisite.timings
            seconds = [t.preprocess, t.inference, t.postprocess]
        if prerequisite.label_map is None:
            raise RuntimeError(f"model {manifest.name}: {manifest.after} gave no label map")
        masks[manifest.after] = volume.with_array((prerequisite.label_map > 0).astype(np.uint8))
    statistics: dict[str, np.ndarray] = {}
    for stage in manifest.stages[:-1]:
        done = run_stage(registry.get(package, stage), volume, masks, statistics, final=False)
        masks[stage.name] = done.grid
        seconds = [a + b for a, b in zip(seconds, (done.preprocess_s, done.inference_s,
                                                     done.decode_s), strict=True)]
    loaded = registry.get(package, manifest.stages[-1])
    kind, fmt = manifest.output.kind, manifest.output.format
    output = partial(ModelOutput, model=manifest.name, version=manifest.version, kind=kind,
                     labels=manifest.reported_labels, provider=loaded.provider,
                     after=prerequisite)

    if kind == "classification" or fmt == "boxes":
        t0 = time.perf_counter()
        grid = model_grid(manifest.input, volume)
        x = normalize(grid.array, manifest.input,
                      {"grid": grid.array, "source": volume.array, **statistics})
        predict = Predictor(loaded)
        t1 = time.perf_counter()
        pre = seconds[0] + t1 - t0
        if kind == "classification":
            probs, per_slice = _classify(predict, x, manifest)
            t2 = time.perf_counter()
            return output(class_probabilities=probs, slice_probabilities=per_slice,
                          timings=Timings(pre, seconds[1] + t2 - t1, seconds[2]))
        raw = run_whole(predict, x)
        t2 = time.perf_counter()
        boxes = _boxes(np.asarray(raw), manifest, grid, volume)
        return output(boxes=boxes,
                      timings=Timings(pre, seconds[1] + t2 - t1,
                                      seconds[2] + time.perf_counter() - t2))

    done = run_stage(loaded, volume, masks, statistics, final=True)
    t2 = time.perf_counter()
    grid, labels = done.grid, done.grid.array
    clean_labels(labels, manifest, grid.spacing)
    within = None
    if manifest.postprocess.within:
        within = resample_like(masks[manifest.postprocess.within], grid, "nearest").array
    clean_union(labels, manifest, within)
    grid = grid.with_array(report_values(labels, grid, manifest))
    flags = raise_flags(grid, done.flag_masks, manifest)
    label_map = resample_like(grid, volume,
                              interpolation=_MAP_BACK[manifest.output.map_back]).array
    probability = None
    if done.heat is not None:
        probability = resample_like(grid.with_array(done.heat), volume,
                                    interpolation="linear").array
        probability = probability.astype(np.float32, copy=False)
    t3 = time.perf_counter()
    return output(
        label_map=label_map,
        probability=probability,
        flags=flags,
        timings=Timings(seconds[0] + done.preprocess_s, seconds[1] + done.inference_s,
                        seconds[2] + done.decode_s + (t3 - t2)),
    )


def raise_flags(grid: Volume, masks: Mapping[str, np.ndarray], manifest: Manifest
                ) -> tuple[RaisedFlag, ...]:
    """Each ``[[flags]]`` entry raised on each of its labels whose final voxels (``grid``: the
    reported label map on the model grid, after every post-processing step) overlap its mask.
    Counted on the model grid, where the mask is exact; the label map is mapped back after."""
    out: list[RaisedFlag] = []
    labels = grid.array
    for spec in manifest.flags:
        mask = masks.get(spec.output)
        if mask is None:
            raise RuntimeError(f"model {manifest.name}: flag output {spec.output!r} was not "
                               "fetched")
        if mask.shape != labels.shape:
            raise RuntimeError(f"model {manifest.name}: flag output {spec.output!r} has shape "
                               f"{mask.shape}; the labels {labels.shape}")
        inside = labels[mask]
        if inside.size == 0:
            continue
        counts = np.bincount(inside.ravel(), minlength=max(spec.labels) + 1)
        for value in spec.labels:
            n = int(counts[value])
            if n:
                out.append(RaisedFlag(value, spec.name, n,
                                      n * grid.voxel_volume_mm3 / 1000.0, spec.concept))
    return tuple(out)


def _classify(predict: Predictor, x: np.ndarray, manifest: Manifest
              ) -> tuple[dict[int, float], np.ndarray | None]:
    """Class probabilities, and for a slice-wise model each slice's (slices, classes), the
    slices combined as the manifest says (mean, max, or mean of the top k)."""
    run = manifest.run
    if run.mode == "slicewise":
        rows = [np.asarray(y, dtype=np.float32).reshape(y.shape[0], -1)
                for _, y in run_slicewise(predict, x, run.batch_size)]
        scores = np.concatenate(rows)
    else:
        scores = np.asarray(run_whole(predict, x), dtype=np.float32).reshape(1, -1)
    per_slice = activate_(scores.T.copy(), manifest.output.activation)  # (classes, slices)
    if run.combine == "max":
        probs = per_slice.max(axis=1)
    elif run.combine == "top_k_mean":
        k = min(run.top_k, per_slice.shape[1])
        probs = np.sort(per_slice, axis=1)[:, -k:].mean(axis=1)
    else:
        probs = per_slice.mean(axis=1)
    channels = [lab.channel for lab in manifest.labels if lab.channel is not None]
    slices = per_slice[channels].T.copy() if run.mode == "slicewise" else None
    return {lab.value: float(probs[lab.channel]) for lab in manifest.labels}, slices


def _boxes(raw: np.ndarray, manifest: Manifest, grid: Volume, source: Volume) -> tuple[Box, ...]:
    """Rows ``(i0, j0, k0, i1, j1, k1, score, class)`` in model-grid voxels to source boxes."""
    rows = raw.reshape(-1, raw.shape[-1])
    if rows.shape[-1] != 8:
        raise RuntimeError(f"model {manifest.name}: box output rows have {rows.shape[-1]} "
                           "columns; expected 8 (i0, j0, k0, i1, j1, k1, score, class)")
    by_channel = {lab.channel: lab.value for lab in manifest.labels}
    out = []
    for row in rows:
        score, cls = float(row[6]), round(float(row[7]))
        if score < manifest.output.threshold or cls not in by_channel:
            continue
        lps = grid.index_to_patient(np.array([row[0:3], row[3:6]], dtype=np.float64))
        ijk = source.patient_to_index(lps)
        out.append(Box(
            label=by_channel[cls], score=score,
            index_min=tuple(ijk.min(axis=0)), index_max=tuple(ijk.max(axis=0)),
            lps_min=tuple(lps.min(axis=0)), lps_max=tuple(lps.max(axis=0)),
        ))
    return tuple(out)
