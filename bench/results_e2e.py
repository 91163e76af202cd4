"""End-to-end latency: last C-STORE of a study -> SEG and SR stored in a real Orthanc.

A 512x512x300 synthetic chest CT is sent with DCMTK storescu to a node running the lung_ct
reference model, whose destination is an Orthanc on loopback. The series is declared complete
after 2 s without instances (series_idle_seconds = 2). Reported, from the moment storescu
returns: completion (the stable wait), the job's start, each pipeline stage, and the time the
last result object was stored in Orthanc. Goal on this machine: <= 15 s in all.

    python bench/results_e2e.py [--slices 300] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.node_process import NodeProcess  # noqa: E402
from support.orthanc import Orthanc  # noqa: E402

from node.synthetic import SeriesGeometry, write_series  # noqa: E402

ENV = dict(os.environ, TCP_NODELAY="1")


def run_once(work: Path, files: list[Path]) -> dict[str, float]:
    with Orthanc(work / "orthanc") as pacs:
        node = NodeProcess(
            work / "node",
            {"node": {"log_level": "INFO"},
             "completion": {"series_idle_seconds": 2, "study_idle_seconds": 2,
                            "check_interval_seconds": 0.1},
             "workers": {"models_dir": str(REPO / "models")},
             "results": {"sr_templates_dir": str(REPO / "sr_templates")}},
            [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}],
        )
        node.add_destination(pacs.aet, pacs.dicom_port)
        node.start()
        try:
            subprocess.run(["/usr/bin/storescu", "-aec", "RADNODE", "127.0.0.1",
                            str(node.port), *map(str, files)], check=True, env=ENV,
                           capture_output=True)
            t0 = time.time()  # the last C-STORE was answered
            store = node.store()
            items = node.wait_for(
                lambda: (i := store.outbox_items()) and all(x.state == "sent" for x in i) and i,
                timeout=300, interval=0.05)
            job = store.jobs()[0]
            series = store.series(job.series_uid)
            assert job.state == "done", job.error
            assert series is not None and series.completed_at is not None
            stored = max(x.sent_at or 0.0 for x in items)
            stages = {"stable wait (series complete)": series.completed_at - t0,
                      "queued -> started": (job.started_at or 0) - series.completed_at}
            stages.update({f"  {k}": v for k, v in job.timings.items()})
            stages["job total"] = (job.finished_at or 0) - (job.started_at or 0)
            stages["send to Orthanc"] = stored - (job.finished_at or 0)
            stages["TOTAL last C-STORE -> in Orthanc"] = stored - t0
            assert len(pacs.sop_instance_uids()) == 2
            return stages
        finally:
            node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="radnode-e2e-") as tmp:
        files = write_series(Path(tmp) / "ct", SeriesGeometry(slices=args.slices))
        for n in range(args.runs):
            runs.append(run_once(Path(tmp) / f"run{n}", files))
    print(f"end-to-end: {args.slices} slices 512x512 CT, lung_ct on CPU, Orthanc on loopback, "
          f"median of {args.runs} runs, {platform.node()} ({os.cpu_count()} cores), "
          f"{time.strftime('%Y-%m-%d')}")
    for stage in runs[0]:
        values = [r[stage] for r in runs]
        print(f"  {stage:<36} {statistics.median(values):7.2f} s   "
              f"runs: {', '.join(f'{v:.2f}' for v in values)}")
    total = statistics.median(r["TOTAL last C-STORE -> in Orthanc"] for r in runs)
    print(f"goal: <= 15 s including the 2 s stable wait: {'met' if total <= 15 else 'NOT met'}"
          f" ({total:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
