"""What a routing condition sees of a series: one instance's header plus series-level facts."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from node.routing.rules import MISSING

log = logging.getLogger("radnode.routing")


class SeriesFacts(Mapping[str, Any]):
    """Attributes by keyword, read leniently: empty or unreadable values count as missing."""

    def __init__(self, header: Dataset, instances: int, calling_ae_title: str = "") -> None:
        self._header = header
        self._facts: dict[str, Any] = {
            "instances": instances,
            "calling_ae_title": calling_ae_title or MISSING,
            "orientation": orientation_of(header),
        }

    @property
    def header(self) -> Dataset:
        return self._header

    def __getitem__(self, key: str) -> Any:
        if key in self._facts:
            value = self._facts[key]
            if value is MISSING:
                raise KeyError(key)
            return value
        try:
            value = self._header.get(key)
        except Exception:  # a malformed element must never stop routing
            raise KeyError(key) from None
        value = _plain(value)
        if value is MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = MISSING) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __iter__(self) -> Iterator[str]:
        yield from self._facts
        for element in self._header:
            if element.keyword:
                yield element.keyword

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, Sequence):
        return MISSING
    if isinstance(value, MultiValue | list):
        items = [_plain(v) for v in value]
        items = [v for v in items if v is not MISSING]
        return items or MISSING
    if isinstance(value, PersonName):
        value = str(value)
    if isinstance(value, bytes):
        return MISSING
    if isinstance(value, str):
        value = value.strip()
        return value or MISSING
    return value


def orientation_of(header: Dataset) -> Any:
    """axial / coronal / sagittal when the slice normal is within ~25 degrees of an axis."""
    try:
        cosines = np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=float)
    except Exception:
        return MISSING
    if cosines.shape != (6,):
        return MISSING
    normal = np.cross(cosines[:3], cosines[3:])
    norm = np.linalg.norm(normal)
    if norm == 0:
        return MISSING
    normal = np.abs(normal / norm)
    axis = int(np.argmax(normal))
    if normal[axis] < 0.9:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


# -- the header routing needs, kept at receive time ------------------------------------------
#
# Completion used to read each series' first instance again for its header, at every completion
# of the series and of its study; for a deflated instance that inflated the whole stream. The
# receiver now keeps the top-level elements routing can use, as encoded, next to the series in
# the spool (``FACTS_FILE``); completion rebuilds the header from them (see header_from_record).

FACTS_FILE = ".series-facts.json"  # hidden: never taken for an instance or an input file
FACTS_VERSION = 1


def header_record(elements: list[tuple[int, str | None, bytes]], implicit_vr: bool,
                  little_endian: bool) -> dict[str, Any]:
    """JSON-ready form of top-level elements (tag, VR or None when implicit, encoded value)."""
    return {
        "version": FACTS_VERSION, "implicit_vr": implicit_vr, "little_endian": little_endian,
        "elements": [[tag, vr, base64.b64encode(value).decode("ascii")]
                     for tag, vr, value in elements],
    }


def header_from_record(record: dict[str, Any]) -> Dataset:
    """The header a record keeps, as raw elements that pydicom decodes when asked, exactly as
    when it reads them from the file (character set, VR lookup, lenient values)."""
    if record.get("version") != FACTS_VERSION:
        raise ValueError(f"unknown facts record version {record.get('version')!r}")
    implicit, little = bool(record["implicit_vr"]), bool(record["little_endian"])
    header = Dataset()
    for tag, vr, encoded in record["elements"]:
        value = base64.b64decode(encoded)
        header[tag] = RawDataElement(BaseTag(int(tag)), vr, len(value), value, 0, implicit,
                                     little)
    header.set_original_encoding(implicit, little, None)
    return header


def load_header(path: Path) -> Dataset | None:
    """The header kept at ``path``; None when there is none or it cannot be read."""
    try:
        record = json.loads(path.read_bytes())
        return header_from_record(record)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a torn or foreign file: read the instance instead
        log.warning("cannot use %s (%s); reading an instance instead", path.name,
                    type(exc).__name__)
        return None
