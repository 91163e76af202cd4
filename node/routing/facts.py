"""What a routing condition sees of a series: one instance's header plus series-level facts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from node.routing.rules import MISSING


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
