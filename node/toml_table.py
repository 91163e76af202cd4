"""Typed reads from one TOML table, shared by the files the node reads as data.

Model manifests (``node.inference.manifest``) and SR templates (``node.results.templates``) both
check every key as they read it; errors name the file and the dotted key and are raised as the
caller's own error class. A manifest's tables are read by their schema, a frozen dataclass whose
fields carry each key's type, default, allowed values and documentation (``read_fields``), and
the reference tables are written from the same schema (``schema_table``).
"""

from __future__ import annotations

import builtins
import enum
import functools
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
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

    def str(self, key: builtins.str, default: Any = REQUIRED,
            choices: tuple[builtins.str, ...] = (), check: Any = None,
            nonempty: builtins.bool = False) -> Any:
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

    def bool(self, key: builtins.str, default: Any = REQUIRED) -> Any:
        value = self.get(key, default)
        if key in self.raw and not isinstance(value, bool):
            self.fail(key, "must be true or false")
        return value

    def num(self, key: builtins.str, default: Any = REQUIRED, positive: builtins.bool = False,
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

    def int(self, key: builtins.str, default: Any = REQUIRED, low: builtins.int = 0) -> Any:
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, f"must be an integer >= {low} (got {value!r})")
        return value

    def numbers(self, key: builtins.str, count: builtins.int, default: Any = REQUIRED,
                integer: builtins.bool = False) -> Any:
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

    def strings(self, key: builtins.str, default: Any = REQUIRED,
                what: builtins.str = "strings") -> Any:
        """A list of non-empty strings, as a tuple; ``what`` names them in the error."""
        value = self.get(key, default)
        if key not in self.raw:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(key, f"must be a list of {what} (got {value!r})")
        return tuple(value)

    def ints(self, key: builtins.str, default: Any = REQUIRED,
             allowed: tuple[builtins.int, ...] | None = None, unique: builtins.bool = True,
             low: builtins.int | None = None, nonempty: builtins.bool = False,
             what: builtins.str = "integers") -> Any:
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

    def table(self, key: builtins.str, default: Any = REQUIRED) -> TomlTable:
        value = self.get(key, default)
        return self.child(value, f"{self.prefix}{toml_key(key)}.")

    def tables(self, key: builtins.str) -> list[TomlTable]:
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


# --- Schemas: frozen dataclasses whose fields say how each key is read and documented ---------
#
# A field's metadata (made by ``key_doc``) holds its documentation and how the key is read:
# ``low``/``high``/``positive`` (numbers; ``low``, ``allowed``, ``unique``, ``nonempty`` also for
# lists of integers), ``choices`` (a subset of a StrEnum's values, in the
# order errors list them), ``check`` (a callable returning a problem or None), ``key`` (the TOML
# key when it differs from the field name), ``required`` (a key the file must give although the
# dataclass has a default), ``manual`` (read by the caller: a default or choices that depend on
# other keys), ``internal`` (not a key at all), ``type_doc``/``default_doc`` (the reference's
# wording where the type or default cannot say it). The field's type and default are the
# schema's; ``read_fields`` reads every non-manual key of a table by them, and
# ``schema_table`` writes the reference table.


_KEY_OPTIONS = frozenset({"low", "high", "positive", "choices", "check", "key", "required",
                          "manual", "internal", "type_doc", "default_doc", "nonempty", "unique",
                          "allowed"})


def key_doc(doc: str, **options: Any) -> dict[str, Any]:
    """Metadata of one schema field: its documentation and how it is read (see above)."""
    unknown = set(options) - _KEY_OPTIONS
    if unknown:
        raise TypeError(f"key_doc: unknown option(s) {sorted(unknown)}")
    return {"doc": doc, **options}


def field_default(f: Field[Any]) -> Any:
    """The field's default value, ``REQUIRED`` when it has none or the file must give it."""
    if f.metadata.get("required"):
        return REQUIRED
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return REQUIRED


def schema_field(cls: type, name: str) -> Field[Any]:
    return next(f for f in fields(cls) if f.name == name)


def default_of(cls: type, name: str) -> Any:
    """The default of ``cls``'s field ``name``: the one place it is written."""
    return field_default(schema_field(cls, name))


def _optional(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.StrEnum)


def _choices(hint: Any, meta: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(c) for c in meta.get("choices") or [m.value for m in hint])


def read_fields(cls: type, t: TomlTable) -> dict[str, Any]:
    """Every key of ``cls`` that is neither manual nor internal, read from ``t`` by its type,
    metadata and default; absent optional keys give their defaults."""
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.metadata.get("manual") or f.metadata.get("internal"):
            continue
        key = f.metadata.get("key", f.name)
        out[f.name] = read_value(t, key, hints[f.name], field_default(f), f.metadata)
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def read_value(t: TomlTable, key: str, hint: Any, default: Any,
               meta: Mapping[str, Any]) -> Any:
    """One key of ``t``, read as a field of type ``hint`` (see ``read_fields``)."""
    hint, _ = _optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_enum(hint):
        value = t.str(key, default, choices=_choices(hint, meta))
        return hint(value) if isinstance(value, str) else value
    if hint is str:
        return t.str(key, default, check=meta.get("check"), nonempty=meta.get("nonempty", False))
    if hint is bool:
        return t.bool(key, default)
    if hint is int:
        return t.int(key, default, low=meta.get("low", 0))
    if hint is float:
        return t.num(key, default, positive=meta.get("positive", False), low=meta.get("low"),
                     high=meta.get("high"))
    if origin is tuple and args and args[-1] is not Ellipsis:
        return t.numbers(key, len(args), default, integer=args[0] is int)
    if origin is tuple and args[0] is int:
        return t.ints(key, default, allowed=meta.get("allowed"), unique=meta.get("unique", True),
                      low=meta.get("low"), nonempty=meta.get("nonempty", False))
    if origin is tuple and args[0] is str:
        return t.strings(key, default)
    if origin is tuple and is_dataclass(args[0]):
        return tuple(read_table(typing.cast(type, args[0]), sub) for sub in t.tables(key))
    if is_dataclass(hint):
        if not t.has(key):
            t.get(key, default)  # fails when required
            return default
        return read_table(typing.cast(type, hint), t.table(key))
    raise TypeError(f"{key}: no reader for {hint}")


def read_table(cls: type, t: TomlTable) -> Any:
    """A ``cls`` made from every key of ``t`` (none of its fields may be manual)."""
    out = cls(**read_fields(cls, t))
    t.done()
    return out


def schema_table(cls: type) -> list[str]:
    """The Markdown table of ``cls``'s keys: key, type, default, meaning."""
    hints = _hints(cls)
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in fields(cls):
        if f.metadata.get("internal"):
            continue
        meta = f.metadata
        key = meta.get("key", f.name)
        type_doc = meta.get("type_doc") or _type_doc(hints[f.name], meta)
        default_doc = meta.get("default_doc")
        if default_doc is None:
            default = field_default(f)
            default_doc = "required" if default is REQUIRED else _value_doc(default)
        doc = " ".join(meta.get("doc", "").split())
        lines.append(f"| `{key}` | {type_doc} | {default_doc} | {doc} |")
    return lines


def _type_doc(hint: Any, meta: Mapping[str, Any]) -> str:
    hint, _ = _optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    low, high = meta.get("low"), meta.get("high")
    if _is_enum(hint):
        return ", ".join(f'`"{c}"`' for c in _choices(hint, meta))
    if hint is str:
        return "string"
    if hint is bool:
        return "bool"
    if hint is int:
        return f"int >= {low}" if low else "int"
    if hint is float:
        if meta.get("positive"):
            return "number > 0"
        if low is not None and high is not None:
            return f"number {low:g}\u2013{high:g}"
        return f"number >= {low:g}" if low is not None else "number"
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"{len(args)} positive {'ints' if args[0] is int else 'numbers'}"
    if origin is tuple and args[0] is int:
        return "list of ints"
    if origin is tuple and args[0] is str:
        return "list of strings"
    if origin is tuple:
        return "array of tables"
    return "table"


def _value_doc(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, enum.Enum):
        return f'`"{value.value}"`'
    if isinstance(value, str):
        return f'`"{value}"`' if value else "none"
    if isinstance(value, tuple):
        return f"`[{', '.join(_value_doc(v).strip('`') for v in value)}]`"
    if isinstance(value, float | int):
        return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"
    return "none"
