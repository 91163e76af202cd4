"""The key tables of ``models/README.md``, generated from the manifest's schema.

Each table stands between ``<!-- schema: NAME -->`` and ``<!-- /schema -->``, NAME a key of
``node.inference.manifest.REFERENCE_TABLES``; the prose around the tables is written by hand.
``radnode models reference`` prints the README with every table regenerated, ``--write``
rewrites it; ``tests/inference/test_manifest_reference.py`` fails when they differ.
"""

from __future__ import annotations

import re

from node.inference.manifest import REFERENCE_TABLES
from node.toml_table import schema_table

FIX = "radnode models reference --write"
_BLOCK = re.compile(r"(<!-- schema: (?P<name>[^>]*?) -->\n)(?P<body>.*?)(<!-- /schema -->)",
                    re.DOTALL)


def regenerate(text: str) -> str:
    """``text`` (models/README.md) with every schema table written anew from the schema.

    Raises ``ValueError`` for a marker naming no table, or a table no marker places."""
    names = [m["name"] for m in _BLOCK.finditer(text)]
    unknown = [n for n in names if n not in REFERENCE_TABLES]
    if unknown:
        raise ValueError(f"unknown schema table(s) {unknown} (known: "
                         f"{', '.join(REFERENCE_TABLES)})")
    missing = [n for n in REFERENCE_TABLES if n not in names]
    if missing:
        raise ValueError(f"no <!-- schema: NAME --> marker for {missing}")

    def table(m: re.Match[str]) -> str:
        rows = schema_table(REFERENCE_TABLES[m["name"]])
        return m.group(1) + "\n".join(rows) + "\n" + m.group(4)

    return _BLOCK.sub(table, text)
