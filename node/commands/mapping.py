"""The label correspondence of ``radnode evaluate``: ``--map``, ``--map-file`` and ``--labels``.

A mapping says which reference values each prediction label stands for, with an optional name:

    --map "1=2,41:white matter"  --map "2=4,43"      (or one option: "1=2,41; 2=4,43")
    --map-file map.json          {"1": [2, 41], "2": {"values": [4, 43], "name": "ventricles"}}

Every mistake is a MappingError with a one-line reason naming the offending part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from node.errors import NodeError

__all__ = ["LabelMap", "MappingError", "parse_label_list", "parse_map_file", "parse_map_specs"]

_ENTRY = re.compile(r"\s*(-?\d+)\s*=\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*(?::\s*(.*?)\s*)?")


class MappingError(NodeError, ValueError):
    """A --map, --map-file or --labels the command cannot use."""


@dataclass
class LabelMap:
    """Prediction label -> reference values, and names for the table (both by prediction label)."""

    values: dict[int, tuple[int, ...]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)

    def only(self, labels: Sequence[int]) -> LabelMap:
        """The mapping restricted to ``labels`` (each must be mapped)."""
        missing = [label for label in labels if label not in self.values]
        if missing:
            raise MappingError(f"--labels {','.join(map(str, missing))}: not in the mapping")
        return LabelMap({k: self.values[k] for k in labels},
                        {k: v for k, v in self.names.items() if k in labels})


def parse_map_specs(specs: Iterable[str]) -> LabelMap:
    """``--map`` values: entries ``PRED=REF[,REF...][:NAME]`` separated by ';' or given as
    several options; a prediction label may appear once."""
    mapping = LabelMap()
    for spec in specs:
        for entry in spec.split(";"):
            if not entry.strip():
                continue
            match = _ENTRY.fullmatch(entry)
            if match is None:
                raise MappingError(f"--map {entry.strip()!r}: expected PRED=REF[,REF...][:NAME], "
                                   "e.g. 1=2,41 or 1=2,41:white matter")
            label = int(match[1])
            refs = tuple(int(v) for v in match[2].split(","))
            _add(mapping, label, refs, match[3] or "", "--map")
    return mapping


def parse_map_file(path: Path) -> LabelMap:
    """A JSON object: ``{"PRED": REF | [REF, ...] | {"values": [...], "name": "..."}}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"--map-file {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MappingError(f"--map-file {path}: not JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict) or not data:
        raise MappingError(f"--map-file {path}: expected a non-empty JSON object "
                           '{"PRED": [REF, ...], ...}')
    mapping = LabelMap()
    for key, value in data.items():
        where = f"--map-file {path}: entry {key!r}"
        label = _integer(key, where)
        name = ""
        if isinstance(value, dict):
            name = value.get("name", "")
            if not isinstance(name, str):
                raise MappingError(f"{where}: the name is not a string")
            value = value.get("values")
        items = value if isinstance(value, list) else [value]
        if not items:
            raise MappingError(f"{where}: no reference values")
        _add(mapping, label, tuple(_integer(v, where) for v in items), name, where)
    return mapping


def parse_label_list(text: str) -> list[int]:
    """``--labels 1,3,5``: the prediction labels to evaluate."""
    labels = [_integer(part.strip(), f"--labels {text!r}") for part in text.split(",")
              if part.strip()]
    if not labels:
        raise MappingError("--labels: no label given")
    return labels


def _add(mapping: LabelMap, label: int, refs: tuple[int, ...], name: str, where: str) -> None:
    if label in mapping.values:
        raise MappingError(f"{where}: prediction label {label} is mapped twice")
    mapping.values[label] = refs
    if name:
        mapping.names[label] = name


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise MappingError(f"{where}: {value!r} is not an integer label")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise MappingError(f"{where}: {value!r} is not an integer label")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
