"""STOW-RS (DICOMweb) sender: POST multipart/related; type="application/dicom" to {url}/studies.

Standard library only (urllib). Files go as stored, byte for byte, one part each; a batch is
split into requests of at most ``max_request_bytes``. The response is read per object
(PS3.18 10.5.3): ReferencedSOPSequence lists the stored instances (WarningReason, if any),
FailedSOPSequence the failed ones with a FailureReason. Servers differ on the status code of a
partial failure (the standard says 202; Orthanc answers 400 with both sequences), so the body
decides when there is one.

Destination-level failures (connection refused or timed out, 401/403/404/405/407/408/429,
5xx) leave the objects uncharged; other answers (409, 400, 413, 415, ...) charge each object.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from node.sender.common import BatchResult, FileProblemError, Outcome, Outgoing, file_meta

DESTINATION_LEVEL_HTTP = {401, 403, 404, 405, 407, 408, 429}

_REFERENCED = "00081199"
_FAILED = "00081198"
_SOP_INSTANCE = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"


@dataclass(frozen=True)
class StowTarget:
    url: str  # DICOMweb base, e.g. http://pacs:8042/dicom-web
    token: str = ""
    username: str = ""
    password: str = ""
    tls: ssl.SSLContext | None = None

    def __str__(self) -> str:
        return safe_url(self.url)

    @property
    def studies_url(self) -> str:
        return self.url.rstrip("/") + "/studies"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/dicom+json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.username:
            pair = f"{self.username}:{self.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return headers


def safe_url(url: str) -> str:
    """The URL without any user:password part, for logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def send_stow(target: StowTarget, objects: list[Outgoing], *, timeout: float,
              max_request_bytes: int = 64 * 1024 * 1024) -> BatchResult:
    result = BatchResult()
    request: list[tuple[Outgoing, bytes]] = []
    size = 0
    for obj in objects:
        try:
            file_meta(obj)
            data = obj.path.read_bytes()
        except FileProblemError as exc:
            result.outcomes[obj.item_id] = Outcome(False, str(exc), permanent=True)
            continue
        except OSError as exc:
            result.outcomes[obj.item_id] = Outcome(False, f"cannot read {obj.path}: {exc}",
                                                   permanent=True)
            continue
        if request and size + len(data) > max_request_bytes:
            _post(target, request, timeout, result)
            request, size = [], 0
            if result.destination_error:
                return result
        request.append((obj, data))
        size += len(data)
    if request:
        _post(target, request, timeout, result)
    return result


def _multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = "radnode-" + uuid.uuid4().hex
    chunks = []
    for data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                   data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def _post(target: StowTarget, request: list[tuple[Outgoing, bytes]], timeout: float,
          result: BatchResult) -> None:
    body, content_type = _multipart([data for _, data in request])
    headers = {**target.headers(), "Content-Type": content_type}
    http = urllib.request.Request(target.studies_url, data=body, headers=headers, method="POST")
    result.associations += 1
    try:
        with urllib.request.urlopen(http, timeout=timeout, context=target.tls) as response:
            code, answer = response.status, response.read()
            answer_type = response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        code, answer = exc.code, exc.read()
        answer_type = exc.headers.get("Content-Type", "") if exc.headers else ""
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        result.destination_error = f"cannot reach {target}: {reason}"
        return
    if code in DESTINATION_LEVEL_HTTP or code >= 500:
        result.destination_error = f"{target} answered HTTP {code}"
        return
    stored, failed = parse_response(answer, answer_type)
    for obj, _ in request:
        uid = obj.sop_instance_uid
        if uid in failed:
            result.outcomes[obj.item_id] = Outcome(False, f"{target} answered HTTP {code}, "
                                                          f"{failed[uid]}")
        elif uid in stored:
            result.outcomes[obj.item_id] = Outcome(True, stored[uid])
        elif code == 200:
            result.outcomes[obj.item_id] = Outcome(True)
        else:
            result.outcomes[obj.item_id] = Outcome(
                False, f"{target} answered HTTP {code} and did not list this instance as stored")


def _reason(code: int | None, what: str) -> str:
    if code is None:
        return what
    described = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", ""))[1]
    return f"{what} 0x{code:04X}" + (f" ({described})" if described else "")


def parse_response(body: bytes, content_type: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """(stored: SOP instance -> warning or "", failed: SOP instance -> reason) from a STOW-RS
    response body in DICOM JSON or XML; empty dicts when there is no readable body."""
    text = body.strip()
    if not text:
        return {}, {}
    try:
        if "xml" in content_type or text.startswith(b"<"):
            items = _xml_sequences(ET.fromstring(text))
        else:
            items = _json_sequences(json.loads(text))
    except (ValueError, ET.ParseError):
        return {}, {}
    stored = {uid: _reason(warning, "warning") if warning is not None else ""
              for uid, warning in items[_REFERENCED]}
    failed = {uid: _reason(reason, "failure reason") if reason is not None
              else "failed (no reason given)" for uid, reason in items[_FAILED]}
    return stored, failed


def _json_sequences(model: Any) -> dict[str, list[tuple[str, int | None]]]:
    out: dict[str, list[tuple[str, int | None]]] = {_REFERENCED: [], _FAILED: []}
    if not isinstance(model, dict):
        return out

    def first(item: dict[str, Any], tag: str) -> Any:
        values = item.get(tag, {}).get("Value") or [None]
        return values[0]

    for seq, reason_tag in ((_REFERENCED, _WARNING_REASON), (_FAILED, _FAILURE_REASON)):
        for item in model.get(seq, {}).get("Value") or []:
            uid = first(item, _SOP_INSTANCE)
            if uid:
                reason = first(item, reason_tag)
                out[seq].append((str(uid), int(reason) if reason is not None else None))
    return out


def _xml_sequences(root: ET.Element) -> dict[str, list[tuple[str, int | None]]]:
    out: dict[str, list[tuple[str, int | None]]] = {_REFERENCED: [], _FAILED: []}

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def value(item: ET.Element, tag: str) -> str | None:
        for attr in item:
            if local(attr.tag) == "DicomAttribute" and attr.get("tag", "").upper() == tag:
                for v in attr:
                    if local(v.tag) == "Value" and v.text:
                        return v.text.strip()
        return None

    for attr in root:
        seq = attr.get("tag", "").upper()
        if local(attr.tag) != "DicomAttribute" or seq not in out:
            continue
        reason_tag = _WARNING_REASON if seq == _REFERENCED else _FAILURE_REASON
        for item in attr:
            if local(item.tag) != "Item":
                continue
            uid = value(item, _SOP_INSTANCE)
            if uid:
                reason = value(item, reason_tag)
                out[seq].append((uid, int(reason) if reason is not None else None))
    return out
