"""Completion and routing in the running node, and `radnode route --explain`, end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support.tools import REPO, dcmtk

from node.synthetic import SeriesGeometry, write_series

ROUTES = [
    {"name": "ct-lungs", "models": ["lung_ct"],
     "match": {"Modality": "CT", "instances": {"min": 5}}},
    {"name": "mr-brain", "models": ["brain_mr"], "match": {"Modality": "MR"}},
]


def models_dir(tmp_path: Path) -> Path:
    """lung_ct, and brain_mr: the same package declared for MR (only routing is tested here)."""
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "lung_ct", models / "lung_ct")
    shutil.copytree(REPO / "models" / "lung_ct", models / "brain_mr")
    manifest = models / "brain_mr" / "model.toml"
    text = manifest.read_text().replace('name = "lung_ct"', 'name = "brain_mr"')
    manifest.write_text(text.replace('modality = ["CT"]', 'modality = ["MR"]')
                        .replace("min_slices = 20", "min_slices = 1"))
    return models


def send(port: int, files) -> None:
    result = subprocess.run([dcmtk("storescu"), "-aec", "RADNODE", "127.0.0.1", str(port),
                             *map(str, files)], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TCP_NODELAY="1"))
    assert result.returncode == 0, result.stderr


def test_sent_study_completes_and_is_routed_by_modality(node_factory, tmp_path) -> None:
    small = SeriesGeometry(rows=64, columns=64, slices=20)
    ct = write_series(tmp_path / "ct", small, study_uid="1.2.826.0.1.99.1")
    mr = write_series(tmp_path / "mr", small, modality="MR", study_uid="1.2.826.0.1.99.1")
    node = node_factory({"completion": {"series_idle_seconds": 1, "study_idle_seconds": 2,
                                        "check_interval_seconds": 0.2},
                         "workers": {"models_dir": str(models_dir(tmp_path))}}, ROUTES)
    send(node.port, ct + mr)
    store = node.store()
    node.wait_for(lambda: (s := store.study("1.2.826.0.1.99.1")) and s.state == "complete")
    jobs = sorted((j.model, j.route) for j in store.jobs())
    assert jobs == [("brain_mr", "mr-brain"), ("lung_ct", "ct-lungs")]
    assert "jobs: lung_ct" in node.log()


def test_complete_series_survives_kill_and_late_instance_reruns(node_factory, tmp_path) -> None:
    files = write_series(tmp_path / "ct", SeriesGeometry(rows=64, columns=64, slices=21))
    node = node_factory({"completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                                        "check_interval_seconds": 0.2},
                         "workers": {"models_dir": str(models_dir(tmp_path))}}, ROUTES)
    send(node.port, files[:20])
    store = node.store()
    series_uid = store.all_series()[0].series_uid
    node.wait_for(lambda: store.series(series_uid).state == "complete")
    node.kill()
    node.start()
    assert store.series(series_uid).state == "complete"
    send(node.port, files[20:])  # late instance: re-opens, and re-runs by the default policy
    node.wait_for(lambda: store.series(series_uid).generation == 2)
    assert sorted(j.generation for j in store.jobs()) == [1, 2]


def test_route_explain_cli(tmp_path, shared_data) -> None:
    write_series(tmp_path / "in" / "ct", SeriesGeometry(rows=32, columns=32, slices=6),
                 series_description="Chest")
    write_series(tmp_path / "in" / "mr", SeriesGeometry(rows=32, columns=32, slices=3),
                 modality="MR")
    config = tmp_path / "config.toml"
    lines = [f'[workers]\nmodels_dir = "{models_dir(tmp_path)}"\n']
    for route in ROUTES:
        match = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in route["match"].items())
        match = match.replace('{"min": 5}', "{ min = 5 }")
        lines += ["[[routes]]", f'name = "{route["name"]}"', f'models = ["{route["models"][0]}"]',
                  f"match = {{ {match} }}", ""]
    config.write_text("\n".join(lines))
    result = subprocess.run([sys.executable, "-m", "node", "route", "--explain",
                             str(tmp_path / "in"), "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[CT Chest, 6 files]" in out and "[MR Synthetic, 3 files]" in out
    assert "MATCH route 'ct-lungs'" in out and "instances is 6: min 5" in out
    assert "no    route 'mr-brain'" in out and "Modality is 'CT': fails equals 'MR'" in out
    assert "jobs: brain_mr (route mr-brain)" in out
    # lung_ct needs 20 slices: the route matches, the model declines
    assert "model lung_ct does not accept it: 6 slices; at least 20 needed" in out
    real = subprocess.run([sys.executable, "-m", "node", "route", "--explain",
                           str(shared_data / "ct_abdomen_ts_dicom" / "dicom"), "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert "no SeriesInstanceUID: the receiver refuses these instances" in real.stdout
    assert "MATCH route 'ct-lungs'" in real.stdout and "instances is 20" in real.stdout
