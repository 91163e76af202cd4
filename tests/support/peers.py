"""Shared by the robustness tests: a node to attack, raw senders, RSS readings, a good sender."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset

from support.node_process import NodeProcess
from support.tools import REPO, dcmtk

NETWORK_TIMEOUT = 2.0  # network.network_timeout and acse_timeout of the nodes under attack


def node_sections(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A node that routes CT to lung_ct quickly and drops silent peers after 2 s."""
    sections: dict[str, dict[str, Any]] = {
        "completion": {"series_idle_seconds": 1, "study_idle_seconds": 1,
                       "check_interval_seconds": 0.2},
        "workers": {"models_dir": str(REPO / "models")},
        "network": {"network_timeout": NETWORK_TIMEOUT, "acse_timeout": NETWORK_TIMEOUT},
        "node": {"log_level": "INFO", "max_associations": 32},
    }
    for name, values in extra.items():
        sections.setdefault(name, {}).update(values)
    return sections


CT_ROUTE = [{"name": "ct", "models": ["lung_ct"], "match": {"Modality": "CT"}}]


def start_node(workdir: Path, **extra: dict[str, Any]) -> NodeProcess:
    return NodeProcess(workdir, node_sections(**extra), CT_ROUTE).start()


def peak_rss_mb(node: NodeProcess) -> float:
    """The node process's peak resident memory (VmHWM), in MB."""
    return status_mb(node, "VmHWM")


def status_mb(node: NodeProcess, field: str) -> float:
    """A memory field of the node process's /proc status (VmRSS, VmHWM...), in MB."""
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc status")


def send_raw(port: int, paths: list[Path], calling: str = "RAWSCU") -> list[int]:
    """Send files with pynetdicom as they are (request UIDs and syntax from the file meta)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    metas = [split_dataset(p)[0] for p in paths]
    ae = AE(ae_title=calling)
    for meta in {(m.MediaStorageSOPClassUID, m.TransferSyntaxUID) for m in metas}:
        ae.add_requested_context(*meta)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE")
    assert assoc.is_established, "association was not accepted"
    try:
        statuses = []
        for path in paths:
            response = assoc.send_c_store(path)
            statuses.append(int(response.Status) if "Status" in response else -1)
        return statuses
    finally:
        assoc.release()


def storescu(port: int, files: list[Path], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-aec", "RADNODE", *args, "127.0.0.1", str(port),
         *map(str, files)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, TCP_NODELAY="1"),
    )


def echoscu(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("echoscu"), "-to", "10", "-aec", "RADNODE", "127.0.0.1",
                           str(port)], capture_output=True, text=True, timeout=30)


def sop_uids(files: list[Path]) -> list[str]:
    return [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]


class GoodSender:
    """A well-behaved modality: sends valid series with storescu, again and again, in a thread,
    until stopped; every send must succeed."""

    def __init__(self, port: int, series: list[list[Path]], pause: float = 0.2) -> None:
        self.port, self.series, self.pause = port, series, pause
        self.results: list[subprocess.CompletedProcess[str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> GoodSender:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.results.append(storescu(self.port, self.series[n % len(self.series)]))
            n += 1
            self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def sent_series(self) -> list[list[Path]]:
        return self.series[: min(len(self.results), len(self.series))]


# -- raw DICOM upper layer, for peers that misbehave ---------------------------------------

def pdata(context_id: int, payload: bytes, command: bool, last: bool,
          claimed_length: int | None = None) -> bytes:
    """One P-DATA-TF PDU holding one PDV; ``claimed_length`` overrides the PDU length."""
    header = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">LBB", len(payload) + 2, context_id, header) + payload
    length = len(pdv) if claimed_length is None else claimed_length
    return struct.pack(">BBL", 0x04, 0, length) + pdv


def c_store_command(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian)."""
    def ui(value: str) -> bytes:
        raw = value.encode()
        return raw + b"\0" if len(raw) % 2 else raw

    def elem(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHL", 0, tag, len(value)) + value

    body = b"".join((
        elem(0x0002, ui(sop_class)),
        elem(0x0100, struct.pack("<H", 0x0001)),
        elem(0x0110, struct.pack("<H", message_id)),
        elem(0x0700, struct.pack("<H", 0)),
        elem(0x0800, struct.pack("<H", 0x0000)),
        elem(0x1000, ui(sop_instance)),
    ))
    return elem(0x0000, struct.pack("<L", len(body))) + body


def open_association(port: int, sop_class: str) -> tuple[Any, socket.socket, int]:
    """A real association (pynetdicom negotiates it); returns it, its socket and the context
    ID, so a test can then write what it likes on the socket."""
    ae = AE(ae_title="BADPEER")
    ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="RADNODE")
    assert assoc.is_established
    sock = assoc.dul.socket.socket
    return assoc, sock, assoc.accepted_contexts[0].context_id


def wait_closed(assoc: Any, timeout: float) -> float:
    """Seconds until the peer (the node) drops the association; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not assoc.is_alive() or assoc.is_aborted:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"the node kept the association open for {timeout} s")
