"""Result-object benchmark: SEG + SR for a 512x512x300 CT with 5 segments.

Times the steps the worker runs after measuring: reading the source headers, building the SEG
(BINARY, empty frames omitted, uncompressed), writing it, building the TID 1500 SR, writing it.
The median of the runs is compared with highdicom's reference of 0.84 s for the SEG alone with
default options (STANDARDS.md: 0.66 s create + 0.18 s write). Goal: SEG + SR together <= 1 s.

    python bench/results.py [--slices 300] [--runs 3] [--seg-type binary|labelmap]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.imaging import load_series  # noqa: E402
from node.inference.manifest import Code, LabelSpec  # noqa: E402
from node.inference.output import ModelOutput  # noqa: E402
from node.measure import measure_labels  # noqa: E402
from node.results import (  # noqa: E402
    build_report,
    build_segmentation,
    read_sources,
    result_uids,
    segment_plan,
    write_dataset,
)
from node.results.templates import SRTemplate  # noqa: E402
from node.synthetic import SeriesGeometry, write_series  # noqa: E402

REFERENCE_SEG_S = 0.84
GOAL_S = 1.0
ORGANS = [("Liver", "10200004"), ("Spleen", "78961009"), ("Left kidney", "64033007"),
          ("Right kidney", "9846003"), ("Aorta", "15825003")]


def label_map_for(shape: tuple[int, int, int]) -> np.ndarray:
    """Five ellipsoids of organ-like size spanning 60-100 slices each: about 390 SEG frames,
    the 12.6 MB of STANDARDS.md's reference case (frame count drives SEG cost)."""
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    out = np.zeros(shape, dtype=np.uint8)
    specs = [((150, 230, 170), (50, 80, 70)), ((150, 240, 360), (35, 45, 40)),
             ((180, 330, 330), (30, 30, 25)), ((180, 330, 180), (30, 30, 25)),
             ((150, 300, 256), (50, 14, 14))]
    for value, ((ck, cj, ci), (rk, rj, ri)) in enumerate(specs, start=1):
        inside = ((k - ck) / rk) ** 2 + ((j - cj) / rj) ** 2 + ((i - ci) / ri) ** 2 <= 1.0
        out[inside & (out == 0)] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seg-type", choices=("binary", "labelmap"), default="binary")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        paths = write_series(folder / "ct", SeriesGeometry(slices=args.slices), 40.0)
        volume = load_series(paths)
        print(f"setup: {args.slices} slices of 512x512 written and loaded in "
              f"{time.perf_counter() - t0:.1f} s")
        label_map = label_map_for(volume.array.shape)
        labels = tuple(
            LabelSpec(v, name, None, Code("91723000", "SCT", "Anatomical Structure"),
                      Code(code, "SCT", name), (40 * v, 255 - 40 * v, 128))
            for v, (name, code) in enumerate(ORGANS, start=1)
        )
        output = ModelOutput("bench", "1.0", "segmentation", labels, label_map=label_map)
        measured = measure_labels(volume, label_map, None, ["volume", "mean", "std"])
        template = SRTemplate(name="bench")
        uids = result_uids("1.2.3", "bench", "1.0")
        when = dt.datetime(2026, 1, 1, 12, 0, 0)
        common = dict(manufacturer="radnode", content_datetime=when)

        rows = []
        for run in range(args.runs):
            times = {}
            t = time.perf_counter()
            sources = read_sources(volume)
            times["read sources"] = time.perf_counter() - t
            t = time.perf_counter()
            segments = segment_plan(output)  # once for both, as node/results/objects.py does
            seg = build_segmentation(
                sources, output, sop_instance_uid=uids.seg_instance,
                series_instance_uid=uids.seg_series, series_number=9001,
                series_description="radnode bench", seg_type=args.seg_type, segments=segments,
                **common)
            times["SEG create"] = time.perf_counter() - t
            t = time.perf_counter()
            seg_file = write_dataset(seg, folder / f"seg{run}.dcm")
            times["SEG write"] = time.perf_counter() - t
            t = time.perf_counter()
            sr = build_report(
                sources, volume, output, measured, [], [], template, seg,
                sop_instance_uid=uids.sr_instance, series_instance_uid=uids.sr_series,
                series_number=9002, series_description="radnode bench", segments=segments,
                **common)
            times["SR create"] = time.perf_counter() - t
            t = time.perf_counter()
            sr_file = write_dataset(sr, folder / f"sr{run}.dcm")
            times["SR write"] = time.perf_counter() - t
            rows.append(times)
        sizes = seg_file.path.stat().st_size, sr_file.path.stat().st_size

    median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    seg_total = median["SEG create"] + median["SEG write"]
    total = seg_total + median["SR create"] + median["SR write"]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"python {platform.python_version()}; median of {args.runs} runs; "
          f"SEG {args.seg_type}, {int(seg.NumberOfFrames)} frames, {sizes[0] / 1e6:.1f} MB; "
          f"SR {sizes[1] / 1e6:.2f} MB")
    for key, value in median.items():
        print(f"  {key:<13} {value:6.3f} s")
    print(f"  {'SEG total':<13} {seg_total:6.3f} s  ({seg_total / REFERENCE_SEG_S:.2f}x "
          f"highdicom's {REFERENCE_SEG_S} s reference)")
    print(f"  {'total':<13} {total:6.3f} s  (SEG + SR; reading headers not included: "
          f"{median['read sources']:.3f} s)")
    print(f"  ratio total / {REFERENCE_SEG_S} s = {total / REFERENCE_SEG_S:.2f}; goal total <= "
          f"{GOAL_S} s: {'met' if total <= GOAL_S else 'NOT met'}")


if __name__ == "__main__":
    main()
