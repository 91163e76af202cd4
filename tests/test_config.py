"""config.toml: read in one place, every problem named by its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.config import ConfigError, build_config, load_config, reference

REPO = Path(__file__).resolve().parent.parent


def test_bundled_config_is_valid_and_routes_ct_by_modality() -> None:
    config = load_config(REPO / "config.toml")
    assert config.node.ae_title == "RADNODE"
    assert config.storage.fsync is True
    assert config.data_dir == REPO / "var"
    assert [(r.match.get("Modality"), r.models) for r in config.routes] == [
        ("CT", ["lung_ct"]), ("MR", ["brain_extraction_t1", "brain_structures_t1"]),
        ("MR", ["brain_extraction_mr"])]


def test_every_setting_has_a_default() -> None:
    config = build_config({}, Path("/srv"))
    assert config.node.port == 11112
    assert config.completion.late_instance_policy == "rerun"
    assert config.data_dir == Path("/srv/var")
    assert config.routes == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"node": {"portt": 1}}, "node.portt: unknown key"),
        ({"nodes": {}}, "nodes: unknown key"),
        ({"node": {"port": "11112"}}, "node.port: must be an integer"),
        ({"node": {"port": 70000}}, "node.port: a port is between 1 and 65535"),
        ({"node": {"ae_title": "A" * 17}}, "node.ae_title: an AE title is 1 to 16"),
        ({"storage": {"fsync": "yes"}}, "storage.fsync: must be true or false"),
        ({"storage": {"min_free_mb": -1}}, "storage.min_free_mb: must be 0 or more"),
        ({"access": {"addresses": ["10.0.0.0/33"]}}, "access.addresses: '10.0.0.0/33'"),
        ({"access": {"calling_ae_titles": "CT1"}}, "access.calling_ae_titles: must be a list"),
        ({"completion": {"late_instance_policy": "maybe"}},
         "completion.late_instance_policy: must be one of rerun, ignore"),
        ({"completion": {"series_idle_seconds": 0}}, "completion.series_idle_seconds: must be"),
        ({"completion": {"series_idle_seconds": 100, "study_idle_seconds": 50}},
         "completion.study_idle_seconds: must be at least"),
        ({"tls": {"enabled": True}}, "tls.certificate: required"),
        ({"routes": [{"models": ["x"]}]}, "routes[0].name: every route needs a name"),
        ({"routes": [{"name": "a", "models": []}]}, "routes[0].models: a route names at least"),
        ({"routes": [{"name": "a", "models": ["m"], "match": {"Modalty": "CT"}}]},
         "routes[0].match.Modalty: 'Modalty' is not a DICOM keyword"),
        ({"routes": [{"name": "a", "models": ["m"], "match": {"SeriesDescription":
                                                              {"regex": "("}}}]},
         "routes[0].match.SeriesDescription.regex: invalid regular expression"),
        ({"routes": [{"name": "a", "models": ["m"], "on": "patient"}]},
         "routes[0].on: must be one of series, study"),
        ({"destinations": [{"name": "p", "kind": "stow", "url": "ftp://x"}]},
         "destinations[0].url: kind 'stow' needs"),
        ({"runtime": {"providers": ["ROCmExecutionProvider"]}},
         "runtime.providers: 'ROCmExecutionProvider' is not one of"),
        ({"results": {"seg": {"type": "fractional"}}},
         "results.seg.type: must be one of binary, labelmap"),
        ({"results": {"sr": {"series_number": 0}}}, "results.sr.series_number: must be greater"),
        ({"results": {"kos": {}}}, "results.kos: unknown key"),
        ({"results": {"seg_type": "labelmap", "seg": {"type": "binary"}}},
         "results.seg_type: set results.seg.type instead, not both"),
    ],
)
def test_bad_settings_name_their_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(raw, Path("."))
    assert str(info.value).startswith(message), str(info.value)


def test_results_have_one_table_per_output_kind() -> None:
    config = load_config(REPO / "config.toml")
    assert (config.results.seg.series_number, config.results.seg.type) == (9001, "binary")
    assert config.results.sr.series_number == 9002
    assert config.results == build_config({}, Path(".")).results


def test_the_old_flat_results_keys_still_work(caplog: pytest.LogCaptureFixture) -> None:
    old = build_config({"results": {"series_number_seg": 11, "series_number_sr": 12,
                                    "seg_type": "labelmap", "manufacturer": "X"}}, Path("."))
    new = build_config({"results": {"seg": {"series_number": 11, "type": "labelmap"},
                                    "sr": {"series_number": 12}, "manufacturer": "X"}},
                       Path("."))
    assert old.results == new.results
    assert "results.seg_type is deprecated; write results.seg.type" in caplog.text


def test_serve_refuses_to_start_with_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[node]\nport = "eleven"\n')
    result = subprocess.run([sys.executable, "-m", "node", "serve", "-c", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "node.port: must be an integer" in result.stderr


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_reference_documents_every_section() -> None:
    text = reference()
    for heading in ("[node]", "[storage]", "[access]", "[tls]", "[completion]", "[[routes]]"):
        assert f"`{heading}`" in text
    assert "| `min_free_mb` | int | `1024` |" in text
    assert "### `[results.seg]`" in text and "### `[results.sr]`" in text
    assert "| `type` | `binary` \\| `labelmap` | `'binary'` |" in text


def test_configuration_doc_is_generated_from_the_schema() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    fix = "run: radnode config reference > docs/configuration.md"
    assert doc.strip() == reference().strip(), fix
