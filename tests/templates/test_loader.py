"""Template files: built-ins load, and every mistake is reported with file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from airflow_predictive.cli import main
from airflow_predictive.templates import TemplateError, TemplateLookupError, load_file, registry
from airflow_predictive.templates.loader import BUILTIN_FOLDER, TemplateRegistry

GOOD = """\
name: nightly
stages:
  - name: extract
    cpu: 2
    memory: 4GiB
    network: 500Mbps
    duration: 45m
  - name: transform
    cpu: 16
    memory: 64GiB
    storage: 1TiB
    duration: 1h30m
    parallelism: 3
"""


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_templates_cover_the_four_workflow_kinds():
    reg = registry()
    assert {"data_analysis", "etl_batch", "ml_training", "web_service"} <= set(reg.templates)
    assert reg.get("web_service").stage("serve").service
    assert reg.get("ml_training").stage("train").interruptible


def test_human_units_are_converted_to_demand_units(tmp_path):
    template = load_file(write(tmp_path, GOOD))
    extract, transform = template.stages
    assert (extract.memory, extract.network, extract.duration) == (4.0, 500.0, 2700.0)
    assert (transform.storage, transform.duration) == (1024.0, 5400.0)
    assert transform.demand()["cpu"] == 48.0
    assert template.upstream("transform") == ("extract",)


@pytest.mark.parametrize(
    ("bad_line", "replacement", "line", "field", "words"),
    [
        (
            "    network: 500Mbps\n",
            "    network: 500Mbps\n    colour: red\n",
            7,
            "stages[0].colour",
            "unknown key 'colour'",
        ),
        ("    memory: 64GiB\n", "    memory: 64Gigs\n", 10, "stages[1].memory", "unknown size unit 'Gigs'"),
        (
            "    duration: 45m\n",
            "    duration: 45 minutes\n",
            7,
            "stages[0].duration",
            "unknown duration unit",
        ),
        ("    memory: 4GiB\n", "    memory: 4\n", 5, "stages[0].memory", "has no unit"),
        (
            "    parallelism: 3\n",
            "    parallelism: 3\n    after: [extrct]\n",
            14,
            "stages[1].after",
            "unknown stage 'extrct'",
        ),
        ("    cpu: 16\n", "", 8, "stages[1].cpu", "missing required key 'cpu'"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, bad_line, replacement, line, field, words):
    assert bad_line in GOOD
    path = write(tmp_path, GOOD.replace(bad_line, replacement))
    with pytest.raises(TemplateError) as info:
        load_file(path)
    error = info.value
    assert (error.path, error.line, error.field) == (path, line, field)
    assert words in str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_unknown_top_level_key_and_invalid_yaml(tmp_path):
    with pytest.raises(TemplateError, match=r"t.yaml:2: stage: unknown key 'stage'"):
        load_file(write(tmp_path, "name: x\nstage: []\n"))
    with pytest.raises(TemplateError, match=r"t.yaml:\d+: \(template\): invalid YAML"):
        load_file(write(tmp_path, "name: x\nstages: [\n"))


def test_user_folder_adds_and_replaces_templates(tmp_path):
    write(tmp_path, GOOD, "nightly.yaml")
    write(tmp_path, GOOD.replace("name: nightly", "name: etl_batch"), "etl.yaml")
    reg = TemplateRegistry([BUILTIN_FOLDER, tmp_path])
    assert reg.get("nightly").stage("transform").cpu == 16
    assert [s.name for s in reg.get("etl_batch").stages] == ["extract", "transform"]
    assert reg.sources["etl_batch"] == tmp_path / "etl.yaml"
    with pytest.raises(
        TemplateLookupError, match="unknown workflow template 'nigthly'; known templates: .*nightly"
    ):
        reg.get("nigthly")


def test_two_files_with_one_template_name_are_refused(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    with pytest.raises(TemplateError, match=r"b.yaml: name: template 'nightly' is also defined in .*a.yaml"):
        TemplateRegistry([tmp_path])


def test_cli_validate_and_show(tmp_path, capsys):
    good = write(tmp_path, GOOD, "good.yaml")
    assert main(["templates", "validate", str(good)]) == 0
    assert main(["templates", "validate"]) == 0  # built-ins
    bad = write(tmp_path, GOOD.replace("4GiB", "4Gb"), "bad.yaml")
    assert main(["templates", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: stages[0].memory: unknown size unit 'Gb'" in err
    assert main(["templates", "show", "--folder", str(tmp_path / "none")]) == 2
    capsys.readouterr()
    assert (
        main(["templates", "show", "--folder", str(good.parent), "--json", "nightly"]) == 2
    )  # bad.yaml in folder
    bad.unlink()
    assert main(["templates", "show", "--folder", str(good.parent), "nightly"]) == 0
    out = capsys.readouterr().out
    assert "memory: 64GiB" in out and "duration: 1h30m" in out
    # What `show` prints is itself a valid template with the same values.
    assert load_file(write(tmp_path, out, "roundtrip.yaml")) == load_file(good)
    assert main(["templates", "show"]) == 0
    assert "etl_batch\textract -> transform -> load" in capsys.readouterr().out


def test_a_key_given_twice_is_an_error_naming_file_line_and_field(tmp_path):
    path = write(tmp_path, GOOD.replace("    cpu: 16\n", "    cpu: 16\n    cpu: 160\n"))
    with pytest.raises(TemplateError) as info:
        load_file(path)
    assert (info.value.line, info.value.field) == (10, "stages[1].cpu")
    assert "duplicate key 'cpu' (first given on line 9)" in str(info.value)
    assert str(info.value).startswith(f"{path}:10: stages[1].cpu: duplicate key")


def test_a_file_that_is_not_utf8_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_bytes(GOOD.replace("name: nightly", "name: nightly\ndescription: caf\u00e9").encode("latin-1"))
    with pytest.raises(TemplateError, match=r"t\.yaml:2: \(template\): not UTF-8 text \(byte 0xe9\)"):
        load_file(path)
    assert main(["templates", "validate", str(path)]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bad_line", "replacement", "line", "field"),
    [
        ("    cpu: 2\n", "    cpu: .inf\n", 4, "stages[0].cpu"),
        ("    cpu: 16\n", "    cpu: .nan\n", 9, "stages[1].cpu"),
        ("    memory: 4GiB\n", f"    memory: {'9' * 400}GiB\n", 5, "stages[0].memory"),
        ("    duration: 45m\n", f"    duration: {'9' * 400}m\n", 7, "stages[0].duration"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(tmp_path, bad_line, replacement, line, field):
    path = write(tmp_path, GOOD.replace(bad_line, replacement))
    with pytest.raises(TemplateError) as info:
        load_file(path)
    assert str(info.value) == f"{path}:{line}: {field}: Input should be a finite number"


def test_show_json_never_prints_a_template_with_an_infinite_value(tmp_path, capsys):
    write(tmp_path, GOOD.replace("    cpu: 2\n", "    cpu: .inf\n"), "nightly.yaml")
    assert main(["templates", "show", "--folder", str(tmp_path), "--json", "nightly"]) == 2
    captured = capsys.readouterr()
    assert "Infinity" not in captured.out
    assert "stages[0].cpu: Input should be a finite number" in captured.err
