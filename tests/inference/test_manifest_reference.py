"""models/README.md's key tables are generated from the manifest schema, as
docs/configuration.md is from the configuration's."""

from __future__ import annotations

import difflib
from dataclasses import fields
from pathlib import Path

import pytest

from node.cli import main
from node.inference.manifest import REFERENCE_TABLES
from node.inference.reference import FIX, regenerate
from node.toml_table import schema_table

REPO = Path(__file__).resolve().parents[2]
README = REPO / "models" / "README.md"


def test_models_readme_tables_are_generated_from_the_schema() -> None:
    text = README.read_text(encoding="utf-8")
    diff = list(difflib.unified_diff(text.splitlines(), regenerate(text).splitlines(),
                                     "models/README.md", "from the schema", lineterm="", n=0))
    assert not diff, f"models/README.md differs from the schema; run: {FIX}\n" + "\n".join(
        diff[:20])


def test_every_key_is_documented() -> None:
    for name, cls in REFERENCE_TABLES.items():
        for f in fields(cls):
            if not f.metadata.get("internal"):
                assert f.metadata.get("doc"), f"{name}.{f.name} has no doc"


def test_a_table_shows_type_choices_and_default() -> None:
    from node.inference.manifest import OutputSpec, PostProcess, RunSpec

    rows = "\n".join(schema_table(OutputSpec))
    assert '| `map_back` | `"nearest"`, `"label_linear"` | `"label_linear"` |' in rows
    assert "| `kind` | " in rows and "| required |" in rows
    assert '| `combine` | `"mean"`, `"max"`, `"top_k_mean"` | `"mean"` |' in "\n".join(
        schema_table(RunSpec))
    assert "| `cut_pieces` | number 0\u20131 | `0` |" in "\n".join(schema_table(PostProcess))


def test_markers_must_match_the_tables() -> None:
    with pytest.raises(ValueError, match="unknown schema table"):
        regenerate("<!-- schema: nothing -->\n<!-- /schema -->\n")
    with pytest.raises(ValueError, match="no <!-- schema: NAME --> marker"):
        regenerate("no markers\n")


def test_cli_prints_and_writes_the_readme(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    models = tmp_path / "models"
    models.mkdir()
    stale = README.read_text(encoding="utf-8").replace(
        "| `min_slices` |", "| `min_slices_stale` |")
    (models / "README.md").write_text(stale, encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text('[workers]\nmodels_dir = "models"\n', encoding="utf-8")
    assert main(["models", "reference", "-c", str(config)]) == 0
    assert capsys.readouterr().out == README.read_text(encoding="utf-8")
    assert main(["models", "reference", "--write", "-c", str(config)]) == 0
    assert (models / "README.md").read_text(encoding="utf-8") == README.read_text(
        encoding="utf-8")
