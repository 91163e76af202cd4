"""Routing conditions: a small language over DICOM attributes, written as TOML tables.

A condition is a table. Its keys are DICOM keywords (``Modality``), the series facts
``instances``, ``calling_ae_title`` and ``orientation``, or the combinators ``all``, ``any``
and ``not``. Several keys in one table must all hold. A key's value is either

- a plain value: equality (``Modality = "CT"``);
- a list: any of the values (``Modality = ["CT", "PT"]``);
- a table of tests, all of which must hold: ``equals``, ``in``, ``regex`` (Python ``re.search``),
  ``min`` and ``max`` (inclusive, numeric), ``exists`` (true or false).

A missing or unparsable attribute never raises: it does not match (only ``exists = false`` holds).
For a multi-valued attribute (``ImageType``) a test holds if it holds for any of its values.
Every evaluation returns the reasons, so ``radnode route --explain`` can say why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import tag_for_keyword

from node.errors import NodeError

MISSING = object()

FACTS = {
    "instances": "number of instances received in the series",
    "calling_ae_title": "calling AE title of the association that sent the series",
    "orientation": "axial, coronal, sagittal or oblique, from ImageOrientationPatient",
}
COMBINATORS = ("all", "any", "not")
TESTS = ("equals", "in", "regex", "min", "max", "exists")


class RuleError(NodeError, ValueError):
    """A condition that cannot be compiled; ``path`` locates it inside the ``match`` table."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Outcome:
    matched: bool
    reasons: list[str] = field(default_factory=list)


Condition = Callable[[Mapping[str, Any]], Outcome]


def compile_condition(spec: Mapping[str, Any], path: str = "") -> Condition:
    """Compile a ``match`` table into a callable over series facts."""
    if not isinstance(spec, Mapping):
        raise RuleError(path, "a condition is a table")
    parts: list[Condition] = []
    for key, value in spec.items():
        here = f"{path}.{key}"
        if key == "all" or key == "any":
            if not isinstance(value, list) or not value:
                raise RuleError(here, f"'{key}' takes a non-empty list of conditions")
            subs = [compile_condition(v, f"{here}[{i}]") for i, v in enumerate(value)]
            parts.append(_all(subs) if key == "all" else _any(subs))
        elif key == "not":
            parts.append(_not(compile_condition(value, here)))
        elif key in FACTS or tag_for_keyword(key) is not None:
            parts.append(_attribute(key, value, here))
        else:
            raise RuleError(here, f"'{key}' is not a DICOM keyword, a series fact "
                                  f"({', '.join(FACTS)}) or one of {', '.join(COMBINATORS)}")
    return _all(parts)


def _all(parts: list[Condition]) -> Condition:
    def evaluate(facts: Mapping[str, Any]) -> Outcome:
        reasons: list[str] = []
        for part in parts:
            outcome = part(facts)
            reasons += outcome.reasons
            if not outcome.matched:
                return Outcome(False, reasons)
        return Outcome(True, reasons)

    return evaluate


def _any(parts: list[Condition]) -> Condition:
    def evaluate(facts: Mapping[str, Any]) -> Outcome:
        reasons: list[str] = []
        for part in parts:
            outcome = part(facts)
            if outcome.matched:
                return Outcome(True, outcome.reasons)
            reasons += outcome.reasons
        return Outcome(False, ["none of: " + "; ".join(reasons)])

    return evaluate


def _not(inner: Condition) -> Condition:
    def evaluate(facts: Mapping[str, Any]) -> Outcome:
        outcome = inner(facts)
        return Outcome(not outcome.matched, ["not (" + "; ".join(outcome.reasons) + ")"])

    return evaluate


def _attribute(key: str, value: Any, path: str) -> Condition:
    if isinstance(value, Mapping):
        tests = dict(value)
        unknown = set(tests) - set(TESTS)
        if unknown:
            first = sorted(unknown)[0]
            raise RuleError(path, f"unknown test {first!r} (known: {', '.join(TESTS)})")
        if not tests:
            raise RuleError(path, "an empty table tests nothing")
    elif isinstance(value, list):
        tests = {"in": value}
    else:
        tests = {"equals": value}
    checks = [_test(name, arg, f"{path}.{name}") for name, arg in tests.items()]

    def evaluate(facts: Mapping[str, Any]) -> Outcome:
        actual = facts.get(key, MISSING)
        for name, check in checks:
            if not check(actual):
                shown = "missing" if actual is MISSING else repr(actual)
                return Outcome(False, [f"{key} is {shown}: fails {name} {tests[name]!r}"])
        shown = "missing" if actual is MISSING else repr(actual)
        passed = ", ".join(f"{n} {tests[n]!r}" for n in tests)
        return Outcome(True, [f"{key} is {shown}: {passed}"])

    return evaluate


def _test(name: str, arg: Any, path: str) -> tuple[str, Callable[[Any], bool]]:
    if name == "exists":
        if not isinstance(arg, bool):
            raise RuleError(path, "exists is true or false")
        return name, lambda actual: (actual is not MISSING) == arg
    if name == "equals":
        _scalar(arg, path)
        return name, _on_values(lambda v: _equal(v, arg))
    if name == "in":
        if not isinstance(arg, list) or not arg:
            raise RuleError(path, "'in' takes a non-empty list")
        for i, item in enumerate(arg):
            _scalar(item, f"{path}[{i}]")
        return name, _on_values(lambda v: any(_equal(v, a) for a in arg))
    if name == "regex":
        if not isinstance(arg, str):
            raise RuleError(path, "regex is a string")
        try:
            pattern = re.compile(arg)
        except re.error as exc:
            raise RuleError(path, f"invalid regular expression: {exc}") from None
        return name, _on_values(lambda v: pattern.search(str(v)) is not None)
    if name in ("min", "max"):
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            raise RuleError(path, f"{name} is a number")
        bound = float(arg)
        if name == "min":
            return name, _on_values(lambda v: (n := _number(v)) is not None and n >= bound)
        return name, _on_values(lambda v: (n := _number(v)) is not None and n <= bound)
    raise RuleError(path, f"unknown test {name!r}")


def _scalar(arg: Any, path: str) -> None:
    if not isinstance(arg, str | int | float | bool):
        raise RuleError(path, "compares with a string, number or boolean")


def _on_values(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def run(actual: Any) -> bool:
        if actual is MISSING or actual is None:
            return False
        values = actual if isinstance(actual, list | tuple) else [actual]
        try:
            return any(check(v) for v in values)
        except (TypeError, ValueError):
            return False

    return run


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return actual is expected
    if isinstance(expected, int | float):
        number = _number(actual)
        return number is not None and number == float(expected)
    return str(actual).strip() == expected


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
