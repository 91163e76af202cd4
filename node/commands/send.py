"""``radnode send DIR --to AE@host:port``: a convenience C-STORE client with a progress bar."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from pydicom.filereader import read_file_meta_info

from node.imaging.inputs import dicom_files
from node.sender.common import Outcome, Outgoing
from node.sender.dicom import DicomTarget, send_dicom

_TARGET = re.compile(r"(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})")


def parse_target(text: str) -> DicomTarget:
    match = _TARGET.fullmatch(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ValueError(f"--to {text!r}: expected AE@host:port, e.g. ORTHANC@127.0.0.1:4242")
    return DicomTarget(match["ae"], match["host"], int(match["port"]))


def send_folder(folder: Path, to: str, calling_ae: str, timeout: float = 30.0) -> int:
    try:
        target = parse_target(to)
    except ValueError as exc:
        print(f"radnode: {exc}", file=sys.stderr)
        return 2
    files = dicom_files(folder) if folder.is_dir() else [folder]
    objects = []
    for n, path in enumerate(files):
        try:
            meta = read_file_meta_info(path)
            objects.append(Outgoing(n, path, str(meta.MediaStorageSOPInstanceUID),
                                    str(meta.MediaStorageSOPClassUID)))
        except Exception as exc:  # not DICOM: say so, send the rest
            print(f"skipped {path.name}: not DICOM ({type(exc).__name__})", file=sys.stderr)
    if not objects:
        print(f"radnode: no DICOM files in {folder}", file=sys.stderr)
        return 1
    bar = ProgressBar(len(objects), f"sending to {target}")
    failures: list[tuple[Outgoing, Outcome]] = []

    def heard(obj: Outgoing, outcome: Outcome) -> None:
        if not outcome.ok:
            failures.append((obj, outcome))
        bar.step()

    result = send_dicom(target, objects, calling_ae=calling_ae, timeout=timeout,
                        on_outcome=heard)
    bar.done()
    for obj, outcome in failures:
        print(f"failed {obj.path.name}: {outcome.detail}", file=sys.stderr)
    if result.destination_error:
        print(f"radnode: {result.destination_error}", file=sys.stderr)
        return 1
    sent = sum(1 for o in result.outcomes.values() if o.ok)
    print(f"sent {sent} of {len(objects)} objects to {target}")
    return 0 if sent == len(objects) else 1


class ProgressBar:
    """A bar on stderr when it is a terminal; a line every 10 % otherwise (logs, pipes)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.count = total, label, 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    def step(self) -> None:
        self.count += 1
        fraction = self.count / self.total
        if self.tty:
            filled = int(30 * fraction)
            rate = self.count / max(time.monotonic() - self.start, 1e-6)
            print(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.count}/"
                  f"{self.total} ({rate:.0f}/s)", end="", file=sys.stderr, flush=True)
        elif int(fraction * 10) > self._last_decile:
            self._last_decile = int(fraction * 10)
            print(f"{self.label}: {self.count}/{self.total}", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print(file=sys.stderr)
