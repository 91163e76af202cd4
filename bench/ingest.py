"""Ingest benchmark: a 300-slice 512x512 CT sent by DCMTK storescu to the node and to storescp.

Both receivers get the same series over loopback with TCP_NODELAY=1 (without it DCMTK pays the
40 ms delayed ACK per image). Each receiver starts empty for every run; the median of the runs
is reported with the ratio node / storescp. Goal: node (fsync on) within 1.5x of storescp.

    python bench/ingest.py [--slices 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from node.synthetic import SeriesGeometry, write_series  # noqa: E402

ENV = dict(os.environ, TCP_NODELAY="1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def send(port: int, aec: str, files: list[Path]) -> float:
    start = time.perf_counter()
    subprocess.run(["/usr/bin/storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
                   check=True, env=ENV, capture_output=True)
    return time.perf_counter() - start


def run_storescp(files: list[Path], work: Path) -> float:
    out = work / "storescp"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/storescp", "-od", str(out), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        elapsed = send(port, "ANY-SCP", files)
    finally:
        proc.terminate()
        proc.wait()
    assert len(list(out.iterdir())) == len(files), "storescp did not store every file"
    return elapsed


def run_node(files: list[Path], work: Path, fsync: bool) -> float:
    data = work / "node"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir()
    port = free_port()
    config = data / "config.toml"
    config.write_text(
        f'[node]\nport = {port}\ndata_dir = "{data / "var"}"\nlog_level = "WARNING"\n'
        f"[storage]\nfsync = {'true' if fsync else 'false'}\nmin_free_mb = 0\n"
        "[completion]\nseries_idle_seconds = 600\nstudy_idle_seconds = 600\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "node", "serve", "-c", str(config)],
                            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.3)  # let the probe connection's association time out of the way
        elapsed = send(port, "RADNODE", files)
    finally:
        proc.terminate()
        proc.wait()
    stored = list((data / "var" / "spool").rglob("*.dcm"))
    assert len(stored) == len(files), f"node stored {len(stored)} of {len(files)}"
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for tool in ("/usr/bin/storescu", "/usr/bin/storescp"):
        if not Path(tool).is_file():
            print(f"{tool} missing: apt-get install dcmtk", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="radnode-bench-") as tmp:
        work = Path(tmp)
        files = write_series(work / "ct", SeriesGeometry(slices=args.slices))
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        results: dict[str, list[float]] = {"storescp": [], "node fsync": [], "node no fsync": []}
        for _ in range(args.runs):
            results["storescp"].append(run_storescp(files, work))
            results["node fsync"].append(run_node(files, work, fsync=True))
            results["node no fsync"].append(run_node(files, work, fsync=False))
    print(f"ingest: {args.slices} slices 512x512 CT ({size_mb:.0f} MB), storescu -> receiver, "
          f"median of {args.runs} runs, {platform.node()} ({os.cpu_count()} cores), "
          f"{time.strftime('%Y-%m-%d')}")
    base = statistics.median(results["storescp"])
    for name, times in results.items():
        median = statistics.median(times)
        print(f"  {name:14s} {median:6.2f} s  ({len(files) / median:5.0f} images/s)  "
              f"ratio {median / base:4.2f}  runs: {', '.join(f'{t:.2f}' for t in times)}")
    ratio = statistics.median(results["node fsync"]) / base
    print(f"goal: node with fsync within 1.5x of storescp: {'met' if ratio <= 1.5 else 'NOT met'}"
          f" ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
