"""The dashboard at ``/``, as a real headless Chromium renders it, after a real lung_ct job."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCREENSHOT_ENV = "RADNODE_SCREENSHOT"  # where to keep the screenshot (default: tmp_path)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium)")
    raise AssertionError


def run_chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90,
                          env=dict(os.environ, HOME=str(profile)))


def test_dashboard_in_headless_chromium(lung_node, tmp_path, fetch) -> None:
    chromium()
    url = f"http://127.0.0.1:{lung_node.node.http_port}/"
    job = lung_node.job

    page = fetch(lung_node.node.http_port, "GET", "/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    html = page.body.decode()
    assert f'id="job-{job.id}"' in html and f'id="preview-{job.id}"' in html
    # the phantom's lungs reach its first and last slice: their volumes say so
    regions = job.result["regions"]
    assert regions["Left lung"]["truncated_at"] == ["inferior", "superior"]
    assert f"Left lung {regions['Left lung']['volume_ml']:.0f} ml (cut by the field of view)" \
        in html

    dom = run_chromium(tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'<tr id="job-{job.id}">' in dom.stdout  # the job is listed
    assert "lung_ct" in dom.stdout and "Left lung" in dom.stdout
    for n in range(3):
        assert f'src="/api/jobs/{job.id}/preview/{n}.png"' in dom.stdout

    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "dashboard.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    result = run_chromium(tmp_path / "profile-shot", f"--screenshot={shot}",
                          "--window-size=1280,900", "--virtual-time-budget=5000", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 20_000, shot.stat().st_size
    with Image.open(shot) as png:
        image = np.asarray(png.convert("RGB"))
    assert image.shape == (900, 1280, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # not one colour
