"""``node.log_format = "json"``: every line one JSON object; a job's lines carry its id and
series UID; no patient data anywhere."""

from __future__ import annotations

import json


def test_json_log_lines_carry_the_job(tmp_path, lung_job, patient) -> None:
    running = lung_job(tmp_path, node={"log_format": "json", "log_level": "DEBUG"})
    running.node.stop()  # a clean stop: its last lines are in the log too
    log = running.node.log()
    records = [json.loads(line) for line in log.splitlines()]  # every line parses
    assert len(records) > 40
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("Z") and record["level"] in ("DEBUG", "INFO",
                                                                    "WARNING", "ERROR")
    job = running.job
    tagged = [r for r in records if r.get("job_id") == job.id]
    assert all(r["series_uid"] == job.series_uid for r in tagged)
    messages = [r["message"] for r in tagged]
    assert any(m.startswith(f"job {job.id} done in") for m in messages), messages
    assert any(r["logger"] == "radnode.receiver" for r in records)
    assert not any("job_id" in r for r in records if r["logger"] == "radnode.receiver")
    assert any(r["message"] == "stopping" for r in records)
    for secret in (*patient, patient[0].split("^")[0]):
        assert secret not in log
