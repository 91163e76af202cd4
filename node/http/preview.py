"""Preview images of a finished segmentation job: its labels drawn over key slices of the source.

Rendered by the node on first request (the series from the spool, the label map from the job's
``labels`` NIfTI, which is on the same grid) and cached as PNGs in the job's results folder,
``preview/0.png`` ... ``preview/2.png``; a re-run of the job (newer label map) renders them again.

Slices: the quartiles (25, 50, 75 %) of the labelled voxels along the slice axis. A "context"
label (the largest one, when it holds most labelled voxels and lies on nearly every labelled
slice: a body outline, say) is left out of that choice and drawn as an outline only, so the
previews show the structures of interest.

Window: the model's own input window when it normalises with one; for CT the lung window
(-600/1500) when a label's name says lung, else the soft-tissue window (40/400); otherwise the
1st to 99th percentile of the slice.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from node.imaging.series import load_series
from node.inference.manifest import Manifest
from node.store import JobRow

COUNT = 3
FILL_ALPHA = 0.4
CONTEXT_FRACTION = 0.9  # a label on at least this share of the slices is "context"
TARGET_SIZE = 384  # small images are enlarged (whole multiples) towards this many pixels

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


class PreviewError(Exception):
    """No preview for this job; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def labels_path(job: JobRow) -> Path | None:
    files = (job.result or {}).get("files") or {}
    return Path(files["labels"]) if files.get("labels") else None


def has_previews(job: JobRow) -> bool:
    return job.state == "done" and labels_path(job) is not None


def preview_png(job: JobRow, n: int, source_paths: list[Path],
                manifest: Manifest | None) -> bytes:
    """PNG ``n`` (0-based) of a job, rendered and cached on first use."""
    if not 0 <= n < COUNT:
        raise PreviewError(404, f"there are {COUNT} previews per job (0 to {COUNT - 1})")
    labels = labels_path(job)
    if job.state != "done" or labels is None:
        raise PreviewError(404, f"job {job.id} has no label map to preview (state {job.state})")
    if not labels.is_file():
        raise PreviewError(404, f"job {job.id}'s label map is no longer on disk")
    folder = labels.parent / "preview"
    target = folder / f"{n}.png"
    with _job_lock(job.id):
        if not _fresh(target, labels):
            _render_all(labels, folder, source_paths, manifest)
    return target.read_bytes()


def _fresh(target: Path, labels: Path) -> bool:
    return target.is_file() and target.stat().st_mtime >= labels.stat().st_mtime


def _job_lock(job_id: int) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(job_id, threading.Lock())


def _render_all(labels: Path, folder: Path, source_paths: list[Path],
                manifest: Manifest | None) -> None:
    present = [p for p in source_paths if p.is_file()]
    if not present or len(present) < len(source_paths):
        raise PreviewError(404, "the job's source images are no longer in the spool")
    volume = load_series(present)
    label_map = sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))
    if label_map.shape != volume.array.shape:
        raise PreviewError(409, f"label map {label_map.shape} and series {volume.array.shape}"
                                " are not on one grid")
    colours = label_colours(manifest)
    window = display_window(manifest, volume.modality)
    images = render_previews(volume.array, label_map, volume.spacing, colours, window)
    folder.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(images):
        tmp = folder / f".{n}.png.tmp"
        Image.fromarray(image).save(tmp, format="PNG")  # RGB, 8 bits per channel
        os.replace(tmp, folder / f"{n}.png")


def label_colours(manifest: Manifest | None) -> dict[int, tuple[int, int, int]]:
    """Colour of each value of a run's label map: the labels it reports (a split label's left
    and right values, a ``reported_value``), both sides in their label's colour."""
    if manifest is None:
        return {}
    return {spec.value: spec.colour for spec in manifest.reported_labels}


def display_window(manifest: Manifest | None, modality: str) -> tuple[float, float] | None:
    """(centre, width) to show the source with; None means the slice's own percentiles."""
    if manifest is not None:
        for norm in manifest.input.normalize:
            if norm.kind == "window":
                return float(norm.params["center"]), float(norm.params["width"])
    if modality == "CT":
        names = " ".join(spec.name.lower() for spec in manifest.labels) if manifest else ""
        return (-600.0, 1500.0) if "lung" in names else (40.0, 400.0)
    return None


def choose_slices(label_map: np.ndarray, count: int = COUNT) -> tuple[list[int], set[int]]:
    """Slice indices (k) through the labels of interest, and the "context" label (if any)."""
    depth = label_map.shape[0]
    values = [int(v) for v in np.unique(label_map) if v > 0]
    quantiles = np.linspace(0.25, 0.75, count)
    if not values:
        return [min(int(depth * q), depth - 1) for q in quantiles], set()
    per_slice = {v: (label_map == v).reshape(depth, -1).sum(axis=1) for v in values}
    totals = {v: int(per_slice[v].sum()) for v in values}
    largest = max(values, key=totals.__getitem__)
    labelled_slices = np.sum(list(per_slice.values()), axis=0) > 0
    context: set[int] = set()
    if (len(values) > 1 and totals[largest] > sum(totals.values()) / 2
            and np.sum(per_slice[largest] > 0) >= CONTEXT_FRACTION * labelled_slices.sum()):
        context = {largest}  # e.g. a body outline around the organs
    weights = np.sum([per_slice[v] for v in values if v not in context], axis=0)
    cdf = np.cumsum(weights.astype(np.float64)) / weights.sum()
    return [int(min(np.searchsorted(cdf, q), depth - 1)) for q in quantiles], context


def render_previews(array: np.ndarray, label_map: np.ndarray,
                    spacing: tuple[float, float, float],
                    colours: Mapping[int, tuple[int, int, int]],
                    window: tuple[float, float] | None,
                    count: int = COUNT) -> list[np.ndarray]:
    """RGB uint8 images of ``count`` slices with the labels drawn over them."""
    slices, context = choose_slices(label_map, count)
    rows_idx, cols_idx = _display_grid(array.shape[1], array.shape[2], spacing)
    images = []
    for k in slices:
        grey = _grey(array[k].astype(np.float32), window)[np.ix_(rows_idx, cols_idx)]
        labels = label_map[k][np.ix_(rows_idx, cols_idx)]
        images.append(_overlay(grey, labels, colours, context))
    return images


def _display_grid(rows: int, columns: int,
                  spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour row and column indices giving square pixels, enlarged when small."""
    pixel = min(spacing[0], spacing[1])
    out_rows = max(1, round(rows * spacing[1] / pixel))
    out_cols = max(1, round(columns * spacing[0] / pixel))
    factor = max(1, TARGET_SIZE // max(out_rows, out_cols))
    out_rows, out_cols = out_rows * factor, out_cols * factor
    rows_idx = np.minimum((np.arange(out_rows) + 0.5) * rows / out_rows, rows - 1).astype(int)
    cols_idx = np.minimum((np.arange(out_cols) + 0.5) * columns / out_cols,
                          columns - 1).astype(int)
    return rows_idx, cols_idx


def _grey(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    if window is None:
        low, high = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
    else:
        centre, width = window
        low, high = centre - width / 2, centre + width / 2
    scaled = (image - low) / max(float(high - low), 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def _overlay(grey: np.ndarray, labels: np.ndarray,
             colours: Mapping[int, tuple[int, int, int]], context: set[int]) -> np.ndarray:
    rgb = np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32)
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    for value in (int(v) for v in np.unique(labels) if v > 0):
        colour = np.asarray(colours.get(value, (255, 0, 0)), dtype=np.float32)
        inside = labels == value
        if value not in context:
            rgb[inside] = rgb[inside] * (1 - FILL_ALPHA) + colour * FILL_ALPHA
        rgb[inside & edge] = colour
    return np.clip(rgb, 0, 255).astype(np.uint8)
