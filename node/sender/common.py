"""What the C-STORE and STOW-RS senders share: the objects, the outcomes, TLS and back-off.

A sender is given a batch of objects for one destination and answers with a :class:`BatchResult`:
an outcome per object it tried, and ``destination_error`` when the destination failed as a whole
(refused, unreachable, lost). The outbox decides what those mean for the store.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from node.errors import NodeError


@dataclass(frozen=True)
class Outgoing:
    """One outbox item to send: its row id and the file as the worker wrote it."""

    item_id: int
    path: Path
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str = ""  # why it failed, or the warning that came with success
    permanent: bool = False  # retrying cannot help (file missing or unreadable)


@dataclass
class BatchResult:
    outcomes: dict[int, Outcome] = field(default_factory=dict)  # by item id; absent: not tried
    destination_error: str | None = None  # the destination failed as a whole
    associations: int = 0  # connections (associations or HTTP requests) attempted


class FileProblemError(NodeError):
    """An outbox file that cannot be sent as it is (missing, not DICOM, wrong UID)."""


def file_meta(obj: Outgoing) -> tuple[str, str]:
    """(SOP class, transfer syntax) from the file's meta header, checked against the outbox row."""
    try:
        meta = read_file_meta_info(obj.path)
    except FileNotFoundError:
        raise FileProblemError(f"file {obj.path} does not exist") from None
    except (OSError, InvalidDicomError) as exc:
        raise FileProblemError(f"file {obj.path} is not readable DICOM: {exc}") from None
    try:
        sop_class = str(meta.MediaStorageSOPClassUID)
        sop_instance = str(meta.MediaStorageSOPInstanceUID)
        syntax = str(meta.TransferSyntaxUID)
    except AttributeError as exc:
        raise FileProblemError(f"file {obj.path} has an incomplete meta header: {exc}") from None
    if sop_instance != obj.sop_instance_uid:
        raise FileProblemError(
            f"file {obj.path} holds SOP instance {sop_instance}, the outbox expects "
            f"{obj.sop_instance_uid}"
        )
    return sop_class, syntax


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Wait after the ``attempt``-th failure in a row: initial * 2**(attempt-1), capped."""
    if attempt < 1:
        return 0.0
    return float(min(maximum, initial * 2.0 ** min(attempt - 1, 62)))


def client_tls_context(ca_certificates: Path | None = None, certificate: Path | None = None,
                       private_key: Path | None = None) -> ssl.SSLContext:
    """A client-side TLS context: the server must chain to ``ca_certificates`` (or the system's
    CAs) and match the host name; ``certificate``/``private_key`` authenticate the node."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_certificates) if ca_certificates else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate:
        context.load_cert_chain(str(certificate), str(private_key) if private_key else None)
    return context
