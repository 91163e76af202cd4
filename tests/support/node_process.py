"""Run the real node (``python -m node serve``) as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.store import JobStore, open_store, store_path
from support.tools import REPO, free_port


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]],
                 routes: list[dict[str, Any]] | None = None) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for route in routes or []:
        lines.append("[[routes]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in route.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class NodeProcess:
    """The node as a real process: start, kill -9, restart, read its log and job store."""

    def __init__(self, workdir: Path, sections: dict[str, dict[str, Any]] | None = None,
                 routes: list[dict[str, Any]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        sections = {k: dict(v) for k, v in (sections or {}).items()}
        node = sections.setdefault("node", {})
        node.setdefault("port", self.port)
        node.setdefault("data_dir", str(self.workdir / "var"))
        node.setdefault("log_level", "DEBUG")
        sections.setdefault("storage", {}).setdefault("min_free_mb", 0)
        # the repository's models and SR templates, unless a test brings its own
        sections.setdefault("workers", {}).setdefault("models_dir", str(REPO / "models"))
        sections.setdefault("results", {}).setdefault("sr_templates_dir",
                                                      str(REPO / "sr_templates"))
        http = sections.setdefault("http", {})
        self.http_port = int(http.setdefault("port", free_port()))
        self.http_enabled = bool(http.get("enabled", True))
        self.port = int(node["port"])
        self.data_dir = Path(node["data_dir"])
        self.config = write_config(self.workdir / "config.toml", sections, routes)
        self.log_path = self.workdir / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def add_destination(self, ae_title: str, port: int, name: str = "pacs") -> None:
        """Append a DICOM destination on loopback to the config; the next start reads it."""
        with self.config.open("a") as f:
            f.write(f"\n[[destinations]]\nname = {toml_value(name)}\n"
                    f"ae_title = {toml_value(ae_title)}\nhost = \"127.0.0.1\"\nport = {port}\n")

    def start(self, timeout: float = 20.0, file_size_limit: int | None = None) -> NodeProcess:
        """``file_size_limit`` (RLIMIT_FSIZE, bytes) makes the node's larger writes fail for
        real, with EFBIG (Python ignores SIGXFSZ)."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")

        def limit() -> None:
            if file_size_limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "-c", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
            preexec_fn=limit,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            if self._ready(offset):
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"node did not start:\n{self.log()}")

    def _ready(self, log_offset: int) -> bool:
        """The node's own readiness probe (``/ready``: store, DICOM listener and every model);
        a node whose HTTP interface is off can only say so in its log."""
        if not self.http_enabled:
            return "listening as" in self.log()[log_offset:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ready",
                                        timeout=1) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False  # not listening yet, or 503: not ready

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self) -> JobStore:
        """A second connection to the node's job store (WAL allows concurrent readers)."""
        return open_store(store_path(self.data_dir))

    def wait_for(self, predicate: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"condition not met in {timeout} s; node log:\n{self.log()[-4000:]}")
