"""Every grid a model makes is bounded before anything is allocated (issue 13): a few small
images with a large pixel spacing make a small series and a gigantic grid."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from node.imaging import load_series
from node.imaging.errors import VolumeError
from node.imaging.volume import Volume
from node.inference import load_package
from node.inference.preprocess import grid_size, model_grid
from node.pipeline import run_pipeline
from node.synthetic import SeriesGeometry, chest_phantom, write_series

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"

# 24 slices of 64 x 64 with 20 mm pixels (the coarsest plausible): 98,304 source voxels, but
# 427 x 427 x 24 = 4.4 million on lung_ct's 3 mm grid.
COARSE = SeriesGeometry(rows=64, columns=64, slices=24, pixel_spacing=(20.0, 20.0),
                        slice_spacing=3.0, origin=(-640.0, -640.0, 0.0))


def test_a_grid_over_the_bound_is_refused_before_it_is_made(tmp_path):
    paths = write_series(tmp_path / "ct", COARSE, chest_phantom)
    package = load_package(MODELS / "lung_ct")
    t0 = time.perf_counter()
    with pytest.raises(VolumeError) as info:
        run_pipeline(paths, package, tmp_path / "out", max_grid_voxels=1_000_000)
    assert time.perf_counter() - t0 < 5
    assert str(info.value) == (
        "lung_ct would resample this series (64 x 64 x 24 voxels) onto a grid of 427 x 427 x "
        "24 = 4,375,896 voxels, more than workers.max_grid_voxels (1,000,000)")
    assert not (tmp_path / "out").exists()  # nothing was written
    # under the bound the same series runs
    result = run_pipeline(paths, package, tmp_path / "out", max_grid_voxels=5_000_000)
    assert result.output.label_map is not None


def test_the_model_run_first_is_bounded_too(tmp_path):
    volume = Volume(np.zeros((40, 64, 64), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0),
                    modality="MR")
    package = load_package(MODELS / "brain_structures_t1")  # after brain_extraction_t1
    first = load_package(MODELS / "brain_extraction_t1").manifest.stages
    largest = max(int(np.prod(grid_size(stage.input, volume))) for stage in first)
    with pytest.raises(VolumeError, match=r"^brain_extraction_t1 \(stage \w+\) would resample"):
        run_pipeline(volume, package, tmp_path / "out", max_grid_voxels=largest - 1)
    with pytest.raises(VolumeError, match=r"^brain_structures_t1 would resample"):
        run_pipeline(volume, package, tmp_path / "out", max_grid_voxels=256**3 - 1)


@pytest.mark.parametrize("model", ["lung_ct", "brain_extraction_t1", "brain_structures_t1",
                                   "brain_extraction_mr"])
@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, -1.0, 1.0]),
                                       np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])],
                         ids=["LPS", "RAS", "coronal"])
def test_the_planned_size_is_the_size_made(model, direction):
    """grid_size computes what model_grid makes, for every stage of the shipped models."""
    volume = Volume(np.zeros((17, 50, 61), np.float32), (0.7, 0.9, 2.5), (10.0, -20.0, 30.0),
                    direction, modality="CT")
    for stage in load_package(MODELS / model).manifest.stages:
        assert grid_size(stage.input, volume) == model_grid(stage.input, volume).shape_ijk


def test_coarse_but_plausible_series_load(tmp_path):
    # the bound is on the grid, not on the series: 20 mm pixels are still a volume
    volume = load_series(write_series(tmp_path / "ct", COARSE, chest_phantom))
    assert volume.spacing[:2] == (20.0, 20.0)
