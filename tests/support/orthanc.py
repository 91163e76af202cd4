"""A real Orthanc PACS for tests: started on loopback with its own config, ports and storage.

Usage::

    from support.orthanc import Orthanc
    with Orthanc(tmp_path / "pacs", dicomweb=True) as pacs:
        ...  # C-STORE to ("127.0.0.1", pacs.dicom_port, pacs.aet); STOW to pacs.dicomweb_url
        assert len(pacs.instances()) == 3

Every instance Orthanc receives (by C-STORE or STOW-RS, duplicates included) is written to its
log by a Lua ReceivedInstanceFilter, so :meth:`Orthanc.received` tells how many times each
object arrived: Orthanc itself keeps one copy per SOP Instance UID and would hide a duplicate.

Skips the test when the Orthanc binary (or, with ``dicomweb=True``, the DICOMweb plugin) is not
installed, unless the environment variable CI is set: then it fails, since .ci/run installs
them (Debian packages ``orthanc`` and ``orthanc-dicomweb``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.tools import free_port

ORTHANC_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",  # Debian orthanc-dicomweb
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not installed; .ci/run installs orthanc and orthanc-dicomweb")
    pytest.skip(f"{what} is not installed (apt-get install orthanc orthanc-dicomweb)")


def orthanc_binary() -> str:
    """The Orthanc executable, or skip (fail under CI)."""
    for candidate in (os.environ.get("ORTHANC_BINARY"), *ORTHANC_CANDIDATES,
                      shutil.which("Orthanc")):
        if candidate and Path(candidate).is_file():
            return candidate
    _missing("Orthanc")
    raise AssertionError


def dicomweb_plugin() -> str:
    """The DICOMweb plugin library, or skip (fail under CI)."""
    for candidate in (os.environ.get("ORTHANC_DICOMWEB_PLUGIN"), *DICOMWEB_PLUGIN_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    _missing("the Orthanc DICOMweb plugin")
    raise AssertionError


RECEIPTS_MARK = "radnode-received"
RECEIPTS_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  print('{RECEIPTS_MARK} ' .. dicom.SOPInstanceUID .. ' ' .. origin.RequestOrigin)
  return true
end
"""




class Orthanc:
    """One Orthanc process. Ports are chosen once and kept across stop()/start(), so a
    destination configured against it stays valid while the PACS is "down"."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        aet: str = "ORTHANC",
        dicomweb: bool = False,
        check_called_aet: bool = True,
        modalities: dict[str, tuple[str, str, int]] | None = None,
        lua: str | None = None,
        record_receipts: bool = True,
        users: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.binary = orthanc_binary()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.log_path = self.workdir / "orthanc.log"
        self.users = dict(users or {})
        self.process: subprocess.Popen[bytes] | None = None
        config: dict[str, Any] = {
            "Name": f"radnode-test-{self.dicom_port}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(users),
            "RegisteredUsers": dict(users or {}),
            "DicomCheckCalledAet": check_called_aet,
            "DicomModalities": {k: list(v) for k, v in (modalities or {}).items()},
            "StorageCompression": False,
            "HttpDescribeErrors": True,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "Plugins": [],
            "LuaScripts": [],
        }
        if dicomweb:
            config["Plugins"] = [dicomweb_plugin()]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        scripts = []
        if record_receipts:
            scripts.append(("receipts.lua", RECEIPTS_LUA))
        if lua is not None:  # loaded last: a ReceivedInstanceFilter here replaces the recorder
            scripts.append(("extra.lua", lua))
        for name, text in scripts:
            (self.workdir / name).write_text(text)
            config["LuaScripts"].append(str(self.workdir / name))
        config.update(extra or {})
        self.config_path = self.workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))

    # -- addresses ------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root, as a STOW destination's ``url``."""
        return f"{self.base_url}/dicom-web"

    # -- life cycle -----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Orthanc:
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [self.binary, "--logfile=" + str(self.log_path.with_suffix(".verbose.log")),
             str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until both the REST API answers and the DICOM port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n"
                                   + self.log_tail())
            try:
                self.get("/system")
                with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"Orthanc not ready after {timeout} s:\n" + self.log_tail())

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop cleanly (SIGTERM); storage is kept, so a later start() sees the same data."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        """Kill at once (SIGKILL), as a crashed PACS."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(15)
        self.process = None

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()  # a clean stop() takes ~3.5 s (Orthanc's servers poll); tests discard data

    def received(self) -> list[str]:
        """SOP Instance UIDs in the order Orthanc received them, one entry per receipt (a
        duplicate send shows twice); kept across stop()/start()."""
        path = self.log_path.with_suffix(".verbose.log")
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            _, mark, rest = line.partition(RECEIPTS_MARK + " ")
            if mark:
                out.append(rest.split()[0])
        return out

    def log_count(self, text: str) -> int:
        """Lines of Orthanc's log that contain ``text``, e.g. "Rejected association"."""
        path = self.log_path.with_suffix(".verbose.log")
        if not path.is_file():
            return 0
        return sum(text in line for line in path.read_text(errors="replace").splitlines())

    def log_tail(self, chars: int = 4000) -> str:
        parts = []
        for path in (self.log_path, self.log_path.with_suffix(".verbose.log")):
            if path.is_file():
                parts.append(path.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    # -- REST -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A REST call; JSON answers are decoded, others come back as text."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if self.users:  # the REST helper logs in as the first user
            user, password = next(iter(self.users.items()))
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=10) as response:
            raw = response.read()
            kind = response.headers.get("Content-Type", "")
        if not raw:
            return None
        return json.loads(raw) if "json" in kind else raw.decode("utf-8", "replace")

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance."""
        return list(self.get("/instances"))

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        return dict(self.get(f"/instances/{orthanc_id}/simplified-tags"))

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs of every stored instance (duplicates would show twice, though
        Orthanc itself keeps one copy per UID)."""
        found = self.request("POST", "/tools/find", {
            "Level": "Instance", "Query": {}, "Expand": True,
        })
        return [item["MainDicomTags"]["SOPInstanceUID"] for item in found]

    def statistics(self) -> dict[str, Any]:
        return dict(self.get("/statistics"))

    def clear(self) -> None:
        """Delete every patient (and so every instance), to reuse one Orthanc across tests."""
        for patient in self.get("/patients"):
            try:
                self.request("DELETE", f"/patients/{patient}")
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
