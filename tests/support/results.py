"""Shared inputs of the result-object tests: a CT with two balls of known size, hand-made
model outputs, and builders with fixed UIDs and time (so every test can check determinism)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from node.imaging import load_series
from node.imaging.volume import Volume
from node.inference.manifest import Code, LabelSpec
from node.inference.output import ModelOutput
from node.results.sources import SourceImages, read_sources
from node.synthetic import SeriesGeometry, ball, write_series

WHEN = dt.datetime(2026, 3, 4, 5, 6, 7)
ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
ALTERED = Code("49755003", "SCT", "Morphologically Altered Structure")
LABELS = (
    LabelSpec(1, "Liver", None, ANATOMY, Code("10200004", "SCT", "Liver"), (221, 130, 101)),
    LabelSpec(2, "Neoplasm", None, ALTERED, Code("108369006", "SCT", "Neoplasm"), (0, 151, 206)),
    LabelSpec(3, "Spleen", None, ANATOMY, Code("78961009", "SCT", "Spleen"), (157, 108, 162)),
)
GEOMETRY = SeriesGeometry(rows=64, columns=64, slices=24, pixel_spacing=(2.0, 2.0),
                          slice_spacing=2.0, origin=(-64.0, -64.0, 0.0))
# Ball A (label 1: 60 HU, radius 14 mm, 11.49 ml) and ball B (label 2: 120 HU, radius 8 mm,
# 2.14 ml), apart, in air (-1000 HU).
BALL_A = ((-25.0, -10.0, 22.0), 14.0, 60.0)
BALL_B = ((25.0, 15.0, 24.0), 8.0, 120.0)


def ball_series(folder: Path) -> tuple[list[Path], Volume]:
    field = ball(*BALL_B, background=ball(*BALL_A, background=-1000.0))
    paths = write_series(folder, GEOMETRY, field, study_uid="1.2.826.0.1.3680043.10.1.1",
                         series_uid="1.2.826.0.1.3680043.10.1.2")
    return paths, load_series(paths)


def ball_case(folder: Path) -> tuple[Path, list[Path], Volume, SourceImages]:
    """The ball CT written to ``folder``/ct: (folder, its files, the volume, their headers)."""
    paths, volume = ball_series(folder / "ct")
    return folder, paths, volume, read_sources(volume)


def ball_label_map(volume: Volume) -> np.ndarray:
    """Label 1 where ball A is, 2 where ball B is (thresholds on the known HU)."""
    a = volume.array
    out = np.zeros(a.shape, dtype=np.uint8)
    out[(a > 30) & (a < 90)] = 1
    out[a > 90] = 2
    return out


def segmentation_output(label_map: np.ndarray, version: str = "1.0.0") -> ModelOutput:
    return ModelOutput("balls", version, "segmentation", LABELS, label_map=label_map)


def seg_kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = dict(
        sop_instance_uid="2.25.1001", series_instance_uid="2.25.1002", series_number=9001,
        series_description="radnode balls", manufacturer="radnode", content_datetime=WHEN,
    )
    kwargs.update(overrides)
    return kwargs


def sr_kwargs(**overrides: object) -> dict[str, object]:
    kwargs: dict[str, object] = dict(
        sop_instance_uid="2.25.2001", series_instance_uid="2.25.2002", series_number=9002,
        series_description="radnode balls", manufacturer="radnode", content_datetime=WHEN,
    )
    kwargs.update(overrides)
    return kwargs
