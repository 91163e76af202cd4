"""``run_model``: a source Volume in, a ModelOutput on the same grid out.

pre (grid, intensities, layout) -> ONNX (whole, slice-wise or sliding window) -> post
(activation, argmax/threshold, per-label clean-up on the model grid) -> back onto the source grid.
"""

from __future__ import annotations

import time

import numpy as np

from node.imaging.resample import resample_like
from node.imaging.volume import Volume
from node.inference.execute import Predictor, run_slicewise, run_sliding_window, run_whole
from node.inference.manifest import Manifest, ModelPackage
from node.inference.output import Box, ModelOutput, Timings
from node.inference.postprocess import activate_, clean_labels, decode_segmentation, label_dtype
from node.inference.preprocess import model_grid, normalize
from node.inference.runtime import SessionRegistry, default_registry


def run_model(
    package: ModelPackage, volume: Volume, registry: SessionRegistry | None = None
) -> ModelOutput:
    """Run one model on one volume; every result is on ``volume``'s own grid."""
    manifest = package.manifest
    loaded = (registry or default_registry()).get(package)
    predict = Predictor(loaded)
    t0 = time.perf_counter()
    grid = model_grid(manifest.input, volume)
    x = normalize(grid.array, manifest.input)
    t1 = time.perf_counter()
    kind, fmt = manifest.output.kind, manifest.output.format
    common = {"model": manifest.name, "version": manifest.version, "kind": kind,
              "labels": manifest.labels, "provider": loaded.provider}

    if kind == "classification":
        probs = _classify(predict, x, manifest)
        t2 = time.perf_counter()
        return ModelOutput(**common, class_probabilities=probs, timings=Timings(t1 - t0, t2 - t1))

    if fmt == "boxes":
        raw = run_whole(predict, x)
        t2 = time.perf_counter()
        boxes = _boxes(np.asarray(raw), manifest, grid, volume)
        return ModelOutput(**common, boxes=boxes,
                           timings=Timings(t1 - t0, t2 - t1, time.perf_counter() - t2))

    labels, heat, inference_s, decode_s = _segment(predict, x, manifest)
    del x
    t2 = time.perf_counter()
    clean_labels(labels, manifest, grid.spacing)
    label_map = resample_like(
        grid.with_array(labels), volume, interpolation=manifest.output.map_back
    ).array
    probability = None
    if heat is not None:
        probability = resample_like(grid.with_array(heat), volume, interpolation="linear").array
        probability = probability.astype(np.float32, copy=False)
    t3 = time.perf_counter()
    return ModelOutput(
        **common,
        label_map=label_map,
        probability=probability,
        timings=Timings(t1 - t0, inference_s, decode_s + (t3 - t2)),
    )


def _segment(predict: Predictor, x: np.ndarray, manifest: Manifest
             ) -> tuple[np.ndarray, np.ndarray | None, float, float]:
    """Label map (and heat map for detection) on the model grid, inference and decode seconds."""
    run = manifest.run
    detection = manifest.output.kind == "detection"
    channels = [lab.channel for lab in manifest.labels]
    if run.mode == "slicewise":
        labels = np.zeros(x.shape[1:], dtype=label_dtype(manifest))
        heat = np.zeros(x.shape[1:], dtype=np.float32) if detection else None
        inference_s = decode_s = 0.0
        t = time.perf_counter()
        for k0, y in run_slicewise(predict, x, run.batch_size):
            t_mid = time.perf_counter()
            inference_s += t_mid - t
            labels[k0 : k0 + y.shape[1]] = decode_segmentation(y, manifest)
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
    labels = decode_segmentation(raw, manifest)
    heat = raw[channels].max(axis=0) if detection else None
    return labels, heat, t_mid - t, time.perf_counter() - t_mid


def _classify(predict: Predictor, x: np.ndarray, manifest: Manifest) -> dict[int, float]:
    """Class probabilities; slice-wise models are averaged over the slices."""
    if manifest.run.mode == "slicewise":
        rows = [np.asarray(y, dtype=np.float32).reshape(y.shape[0], -1)
                for _, y in run_slicewise(predict, x, manifest.run.batch_size)]
        scores = np.concatenate(rows)
    else:
        scores = np.asarray(run_whole(predict, x), dtype=np.float32).reshape(1, -1)
    probs = activate_(scores.T.copy(), manifest.output.activation).mean(axis=1)
    return {lab.value: float(probs[lab.channel]) for lab in manifest.labels}


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
