"""Ingest benchmark: a 300-slice 512x512 CT sent by DCMTK storescu to the node and to storescp.

Both receivers get the same series over loopback with TCP_NODELAY=1 (without it DCMTK pays the
40 ms delayed ACK per image). Each receiver starts empty for every run; the median of the runs
is reported with the ratio node / storescp. Goal: node (fsync on) within 1.5x of storescp.

storescp never fsyncs, so the benchmark also times, for context, the two floors a durable
receiver cannot go below: storescu's own time against ``storescp --ignore`` (received and
dropped), and the disk alone: the node's spool writing the same files durably (temporary name,
fdatasync, rename, folder fsync) with no network. storescu sends an instance only after the
answer to the one before, so a receiver that fsyncs before answering pays roughly their sum. On
a virtual disk the disk alone varies with the host's load, and with it the fsync run.

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

from node.receiver.spool import Spool  # noqa: E402
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


def clear(folder: Path) -> None:
    """Empty ``folder`` and sync, so the last run's deletions (and, with the `discard` mount
    option, their TRIM) are not paid by the first fsync of the next one."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    os.sync()


def run_storescp(files: list[Path], work: Path, ignore: bool = False) -> float:
    """storescp writing each instance to a file, or with ``ignore`` receiving and dropping it."""
    out = work / "storescp"
    clear(out)
    port = free_port()
    proc = subprocess.Popen(["/usr/bin/storescp", "-od", str(out), *(["--ignore"] * ignore),
                             str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        elapsed = send(port, "ANY-SCP", files)
    finally:
        proc.terminate()
        proc.wait()
    stored = len(list(out.iterdir()))
    assert stored == (0 if ignore else len(files)), f"storescp stored {stored} files"
    return elapsed


def run_node(files: list[Path], work: Path, fsync: bool) -> float:
    data = work / "node"
    clear(data)
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


def run_disk_alone(files: list[Path], work: Path) -> float:
    """The spool's durable writes of the same files, without a network."""
    root = work / "disk"
    clear(root)
    spool = Spool(root, fsync=True)
    data = [f.read_bytes() for f in files]
    start = time.perf_counter()
    for n, raw in enumerate(data):
        spool.write(f"1.2.3/1.2.3.4/{n}.dcm", raw)
    return time.perf_counter() - start


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
        results: dict[str, list[float]] = {"storescp": [], "node fsync": [], "node no fsync": [],
                                           "storescp ignore": [], "disk alone": []}
        for _ in range(args.runs):
            results["storescp"].append(run_storescp(files, work))
            results["node fsync"].append(run_node(files, work, fsync=True))
            results["node no fsync"].append(run_node(files, work, fsync=False))
            results["storescp ignore"].append(run_storescp(files, work, ignore=True))
            results["disk alone"].append(run_disk_alone(files, work))
    print(f"ingest: {args.slices} slices 512x512 CT ({size_mb:.0f} MB), storescu -> receiver, "
          f"median of {args.runs} runs, {platform.node()} ({os.cpu_count()} cores), "
          f"{time.strftime('%Y-%m-%d')}")
    base = statistics.median(results["storescp"])
    for name, times in results.items():
        median = statistics.median(times)
        print(f"  {name:15s} {median:6.2f} s  ({len(files) / median:5.0f} images/s)  "
              f"ratio {median / base:4.2f}  runs: {', '.join(f'{t:.2f}' for t in times)}")
    floor = statistics.median(results["storescp ignore"]) + statistics.median(results["disk alone"])
    print(f"  floor for a receiver that fsyncs before answering (storescp ignore + disk alone): "
          f"{floor:.2f} s, ratio {floor / base:4.2f}")
    ratio = statistics.median(results["node fsync"]) / base
    print(f"goal: node with fsync within 1.5x of storescp: {'met' if ratio <= 1.5 else 'NOT met'}"
          f" ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
