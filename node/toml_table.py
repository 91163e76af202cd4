"""Typed reads from one TOML table, shared by the files the node reads as data.

Model manifests (``node.inference.manifest``) and SR templates (``node.results.templates``) both
check every key as they read it; errors name the file and the dotted key and are raised as the
caller's own error class.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

REQUIRED: Any = object()  # default meaning "the key must be present"


def read_toml(path: Path, error: type[Exception], where: str, missing: str) -> dict[str, Any]:
    """The parsed file. Raises ``error``: ``missing`` (the whole message) when the file does not
    exist, ``"<where>: not valid TOML: ..."`` when it does not parse."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(missing) from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: not valid TOML: {exc}") from None


def toml_key(name: str) -> str:
    """``name`` as it is written in a dotted TOML key (quoted unless bare)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'


class TomlTable:
    """Reads typed keys from one TOML table and reports unknown ones.

    ``error`` is the exception class raised; ``list_unknown`` makes ``done`` name every unknown
    key, not just the first.
    """

    def __init__(self, raw: Any, where: str, prefix: str, error: type[Exception],
                 list_unknown: bool = False) -> None:
        self.where, self.prefix = where, prefix
        self.error, self.list_unknown = error, list_unknown
        if not isinstance(raw, dict):
            self.fail("", "must be a table")
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def fail(self, key: str, message: str) -> None:
        dotted = f"{self.prefix}{key}" if key else self.prefix.rstrip(".") or "(top level)"
        raise self.error(f"{self.where}: {dotted}: {message}")

    def child(self, raw: Any, prefix: str) -> TomlTable:
        """A table read like this one; ``prefix`` is its full dotted name plus a dot."""
        return TomlTable(raw, self.where, prefix, self.error, self.list_unknown)

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any = REQUIRED) -> Any:
        """The raw value (marked as read), ``default`` when absent; fails if it is required."""
        self.seen.add(key)
        if key not in self.raw:
            if default is REQUIRED:
                self.fail(key, "is required")
            return default
        return self.raw[key]

    def str(self, key: str, default: Any = REQUIRED, choices: tuple[str, ...] = (),
            check: Any = None, nonempty: bool = False) -> Any:
        """A string; it may be empty only when optional and ``nonempty`` is false."""
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if not isinstance(value, str) or (
            (nonempty or default is REQUIRED) and not value.strip()
        ):
            self.fail(key, "must be a non-empty string")
        if choices and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)} (got {value!r})")
        if check is not None and (problem := check(value)):
            self.fail(key, f"{problem} (got {value!r})")
        return value

    def bool(self, key: str, default: Any = REQUIRED) -> Any:
        value = self.get(key, default)
        if key in self.raw and not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def num(self, key: str, default: Any = REQUIRED, positive: bool = False,
            low: float | None = None, high: float | None = None) -> Any:
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, "must be a number")
        if positive and value <= 0:
            self.fail(key, f"must be greater than 0 (got {value})")
        if (low is not None and value < low) or (high is not None and value > high):
            self.fail(key, f"must be between {low} and {high} (got {value})")
        return float(value)

    def int(self, key: str, default: Any = REQUIRED, low: int = 0) -> Any:
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, f"must be an integer >= {low} (got {value!r})")
        return value

    def numbers(self, key: str, count: int, default: Any = REQUIRED, integer: bool = False
                ) -> Any:
        """Exactly ``count`` positive numbers (or integers), as a tuple."""
        value = self.get(key, default)
        if key not in self.raw:
            return value
        kind = "integers" if integer else "numbers"
        ok = (
            isinstance(value, list)
            and len(value) == count
            and all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0
                    for v in value)
            and (not integer or all(isinstance(v, int) for v in value))
        )
        if not ok:
            self.fail(key, f"must be {count} positive {kind} (got {value!r})")
        return tuple(int(v) if integer else float(v) for v in value)

    def strings(self, key: str, default: Any = REQUIRED, what: str = "strings") -> Any:
        """A list of non-empty strings, as a tuple; ``what`` names them in the error."""
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"must be a list of {what} (got {value!r})")
        return tuple(value)

    def ints(self, key: str, default: Any = REQUIRED, allowed: tuple[int, ...] | None = None,
             unique: bool = True, low: int | None = None, nonempty: bool = False,
             what: str = "integers") -> Any:
        """A list of integers, as a tuple; ``what`` names them in the error."""
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if not isinstance(value, list) or (nonempty and not value) or not all(
            isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low)
            for v in value
        ):
            self.fail(key, f"must be a {'non-empty ' if nonempty else ''}list of {what} "
                           f"(got {value!r})")
        if allowed is not None and any(v not in allowed for v in value):
            self.fail(key, f"values must be among {list(allowed)} (got {value!r})")
        if unique and len(set(value)) != len(value):
            self.fail(key, f"has duplicates (got {value!r})")
        return tuple(value)

    def table(self, key: str, default: Any = REQUIRED) -> TomlTable:
        value = self.get(key, default)
        return self.child(value, f"{self.prefix}{toml_key(key)}.")

    def tables(self, key: str) -> list[TomlTable]:
        """An array of tables (``[[key]]``); absent is empty."""
        value = self.get(key, [])
        if not isinstance(value, list):
            self.fail(key, "must be an array of tables ([[...]])")
        return [self.child(v, f"{self.prefix}{key}[{i}].") for i, v in enumerate(value)]

    def done(self) -> None:
        """Fails on the first key (alphabetically) that no read asked for."""
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            also = f" (also {', '.join(unknown[1:])})" if self.list_unknown and unknown[1:] \
                else ""
            self.fail(unknown[0], "unknown key" + also)
