"""The service runs routed jobs through the pipeline; `radnode run` is the same pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.tools import REPO, dcmtk

from node.synthetic import SeriesGeometry, write_series

CHEST = SeriesGeometry(rows=128, columns=128, slices=30, pixel_spacing=(3.0, 3.0),
                       slice_spacing=3.0, origin=(-192.0, -192.0, 0.0))
STAGES = {"load", "preprocess", "inference", "postprocess", "measure", "write"}


def send(port: int, files) -> None:
    result = subprocess.run([dcmtk("storescu"), "-aec", "RADNODE", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TCP_NODELAY="1"))
    assert result.returncode == 0, result.stderr


def service(node_factory, **extra):
    sections = {
        "completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                       "check_interval_seconds": 0.2},
        "workers": {"models_dir": str(REPO / "models")},
    }
    sections.update(extra)
    return node_factory(sections, [{"name": "ct", "models": ["lung_ct"],
                                    "match": {"Modality": "CT"}}])


def test_routed_series_runs_through_the_model(node_factory, tmp_path) -> None:
    node = service(node_factory)
    assert "model lung_ct 1.1.0 runs on CPUExecutionProvider" in node.log()
    send(node.port, write_series(tmp_path / "ct", CHEST))
    store = node.store()
    job = node.wait_for(lambda: next((j for j in store.jobs() if j.state in ("done", "failed")),
                                     None), timeout=60)
    assert job.state == "done", job.error
    assert set(job.timings) == STAGES and all(v >= 0 for v in job.timings.values())
    regions = job.result["regions"]
    # the phantom's lungs are elliptic cylinders of 55 x 75 mm over 90 mm: 1166 ml each
    for side in ("Left lung", "Right lung"):
        assert abs(regions[side]["volume_ml"] - 1166) / 1166 < 0.1, regions[side]
        assert regions[side]["intensity_unit"] == "[hnsf'U]"
    labels = Path(job.result["files"]["labels"])
    assert labels.is_file() and labels.parent.name == "lung_ct-g1"


def test_series_that_makes_no_volume_fails_its_job_with_a_reason(node_factory, tmp_path) -> None:
    node = service(node_factory)
    files = write_series(tmp_path / "ct", CHEST)
    del files[10:12]  # two missing slices: an uneven gap
    send(node.port, files)
    store = node.store()
    job = node.wait_for(lambda: next((j for j in store.jobs() if j.state in ("done", "failed")),
                                     None), timeout=60)
    assert job.state == "failed"
    assert "missing" in job.error or "gap" in job.error, job.error
    assert "Synthetic" not in job.error and "SYNTH0001" not in job.error


def test_model_that_does_not_accept_the_series_gets_no_job(node_factory, tmp_path) -> None:
    node = service(node_factory)
    few = SeriesGeometry(rows=64, columns=64, slices=5)  # lung_ct needs 20 slices
    send(node.port, write_series(tmp_path / "ct", few))
    store = node.store()
    node.wait_for(lambda: store.all_series() and store.all_series()[0].state == "complete")
    assert store.jobs() == []


def test_service_refuses_an_invalid_model(tmp_path) -> None:
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "lung_ct", models / "lung_ct")
    manifest = models / "lung_ct" / "model.toml"
    manifest.write_text(manifest.read_text().replace('name = "ct"', 'name = "image"'))
    config = tmp_path / "config.toml"
    config.write_text(f'[workers]\nmodels_dir = "{models}"\n[node]\nport = 1\n')
    result = subprocess.run([sys.executable, "-m", "node", "serve", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "invalid model packages" in result.stderr and "lung_ct" in result.stderr
    check = subprocess.run([sys.executable, "-m", "node", "models", "check", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "ERROR lung_ct" in check.stdout


def test_models_check_reads_the_sr_template_against_the_manifest(tmp_path) -> None:
    templates = tmp_path / "sr_templates"
    templates.mkdir()
    text = (REPO / "sr_templates" / "lung_ct.toml").read_text()
    (templates / "lung_ct.toml").write_text(text.replace("LAA-950", "LAA-910"))
    config = tmp_path / "config.toml"
    config.write_text(f'[workers]\nmodels_dir = "{REPO / "models"}"\n'
                      f'[results]\nsr_templates_dir = "{templates}"\n')
    check = subprocess.run([sys.executable, "-m", "node", "models", "check", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert "'LAA-910' is not measured by lung_ct" in check.stdout


def test_service_refuses_a_route_to_a_missing_model(tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[workers]\nmodels_dir = "{REPO / "models"}"\n'
                      f'[results]\nsr_templates_dir = "{REPO / "sr_templates"}"\n'
                      '[[routes]]\nname = "x"\nmodels = ["no_such_model"]\n')
    result = subprocess.run([sys.executable, "-m", "node", "serve", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "routes[0].models: model 'no_such_model' is not installed" in result.stderr


def radnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args, "-c", str(REPO / "config.toml")],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_radnode_run_on_a_dicom_folder(tmp_path) -> None:
    write_series(tmp_path / "ct", CHEST)
    result = radnode("run", str(tmp_path / "ct"), "--model", "lung_ct", "--out",
                     str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "[1/6" in result.stderr and "load" in result.stderr and "[6/6" in result.stderr
    assert "Left lung:" in result.stdout and "LAA-950" in result.stdout
    summary = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert set(summary["timings"]) == STAGES
    assert abs(summary["regions"]["Right lung"]["volume_ml"] - 1166) / 1166 < 0.1


def test_radnode_run_on_nifti(tmp_path, shared_data) -> None:
    nifti = shared_data / "ct_abdomen_ts_nifti" / "example_ct.nii.gz"
    result = radnode("run", str(nifti), "--model", "lung_ct", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert summary["regions"]["Left lung"]["intensity_unit"] == "[hnsf'U]"
    assert (tmp_path / "out" / "labels.nii.gz").is_file()


def test_radnode_run_refuses_what_the_model_does_not_accept(tmp_path) -> None:
    write_series(tmp_path / "mr", CHEST, modality="MR")
    result = radnode("run", str(tmp_path / "mr"), "--model", "lung_ct", "--out",
                     str(tmp_path / "out"))
    assert result.returncode == 1
    assert "does not accept this series: modality MR" in result.stderr
    missing = radnode("run", str(tmp_path / "nothing"), "--model", "lung_ct", "--out",
                      str(tmp_path / "out"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_series_larger_than_max_voxels_is_refused(node_factory, tmp_path) -> None:
    node = service(node_factory, workers={"models_dir": str(REPO / "models"),
                                          "max_voxels": 100_000})
    send(node.port, write_series(tmp_path / "ct", CHEST))  # 128 x 128 x 30 = 491,520 voxels
    store = node.store()
    job = node.wait_for(lambda: (j := store.jobs()) and j[0].state in ("done", "failed") and j[0],
                        timeout=60)
    assert job.state == "failed"
    assert "more than workers.max_voxels (100,000)" in job.error
