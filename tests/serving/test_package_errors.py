"""A package that is not what the export stage wrote is refused before anything runs it:
`python -m serving PACKAGE` prints ONE line `error: serve: ...` on stderr (no traceback) and
exits 1; the Python classes raise PackageError. Each case breaks one thing of a copy of a
package exported by the real export stage; where the manifest is edited, it is re-sealed
(its digest made to match) unless the case is the edit itself."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from serving.classifier import OnnxClassifier
from serving.package import PackageError
from serving.translator import OnnxTranslator
from tests.serving.conftest import read_manifest_json, serve, write_manifest_json


def assert_refused(package: Path, *patterns: str) -> str:
    """The CLI's answer to a bad package: exit 1, nothing on stdout, one line on stderr that
    names the problem."""
    result = serve(package, ["a line that is never read"])
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: serve: "), lines[0]
    assert result.stdout == ""
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]


def edit(package: Path, change: Callable[[dict], None], seal: bool = True) -> None:
    manifest = read_manifest_json(package)
    change(manifest)
    write_manifest_json(package, manifest, seal=seal)


@pytest.fixture(params=["classification", "translation"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def broken(kind, package_copy, request) -> Path:
    """A private copy of the `kind` package, to break."""
    return package_copy(request.getfixturevalue(f"{kind}_package"))


GRAPH = {"classification": "model.onnx", "translation": "decoder_with_past.onnx"}
TASK_FIELD = {"classification": "labels", "translation": "generation"}


# ---------------------------------------------------------------- the manifest's fields


@pytest.mark.parametrize("field", ["format_version", "opset", "files", "tokenizer", "task-specific"])
def test_a_missing_required_field_is_named(kind, broken, field):
    field = TASK_FIELD[kind] if field == "task-specific" else field
    edit(broken, lambda manifest: manifest.pop(field))
    assert_refused(broken, field, "missing")


def test_a_missing_digest_is_a_missing_field(broken):
    edit(broken, lambda manifest: manifest.pop("manifest_sha256"), seal=False)
    assert_refused(broken, "manifest_sha256", "missing")


def test_an_unknown_format_version_is_refused(kind, broken):
    edit(broken, lambda manifest: manifest.update(format_version=2))
    assert_refused(broken, "format_version 2", "this runtime reads format_version 1")


def test_an_unknown_task_is_refused(broken):
    edit(broken, lambda manifest: manifest.update(task="summarization"))
    assert_refused(broken, "'summarization'", "is not one of")


def test_a_manifest_that_is_not_json_is_refused(broken):
    (broken / "manifest.json").write_text('{"format_version": 1,', encoding="utf-8")
    assert_refused(broken, "not valid JSON")


def test_a_folder_without_a_manifest_is_refused(tmp_path):
    assert_refused(tmp_path, "manifest.json not found")


# ---------------------------------------------------------------- the files map


def test_an_empty_files_map_is_refused(kind, broken):
    edit(broken, lambda manifest: manifest.update(files={}))
    assert_refused(broken, "files is empty")


@pytest.mark.parametrize("unlisted", ["graph", "tokenizer.json"])
def test_a_files_map_that_does_not_cover_a_graph_or_the_tokenizer_is_refused(kind, broken, unlisted):
    name = GRAPH[kind] if unlisted == "graph" else unlisted
    edit(broken, lambda manifest: manifest["files"].pop(name))
    assert_refused(broken, f"files does not list {name}")


def test_a_file_changed_after_export_is_refused(kind, broken):
    with (broken / "tokenizer.json").open("a", encoding="utf-8") as handle:
        handle.write(" ")
    assert_refused(broken, "tokenizer.json: sha256", "does not match manifest.json")


def test_a_listed_file_that_is_missing_is_refused(kind, broken):
    (broken / GRAPH[kind]).unlink()
    assert_refused(broken, f"{GRAPH[kind]}: listed in manifest.json but missing")


# ---------------------------------------------------------------- the graph itself


def test_a_truncated_graph_whose_hash_was_fixed_is_a_one_line_error(kind, broken):
    """Only the graph is bad: its hash in `files` and the digest agree with the truncated file,
    so the loader gets as far as onnxruntime, whose failure must still be one line."""
    graph = broken / GRAPH[kind]
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    digest = hashlib.sha256(graph.read_bytes()).hexdigest()
    edit(broken, lambda manifest: manifest["files"].update({GRAPH[kind]: digest}))
    assert_refused(broken, f"{GRAPH[kind]}: onnxruntime cannot load the graph")
    cls = OnnxClassifier if kind == "classification" else OnnxTranslator
    with pytest.raises(PackageError, match="onnxruntime cannot load the graph"):
        cls(broken)


# ---------------------------------------------------------------- edited after export


def test_labels_swapped_after_export_are_refused(classification_package, package_copy):
    broken = package_copy(classification_package)
    edit(broken, lambda manifest: manifest.update(labels=manifest["labels"][::-1]), seal=False)
    assert read_manifest_json(broken)["labels"] == ["positive", "negative"]
    assert_refused(broken, "edited after export", "manifest_sha256")


def test_generation_edited_after_export_is_refused(translation_package, package_copy):
    broken = package_copy(translation_package)
    edit(broken, lambda manifest: manifest["generation"].update(num_beams=1), seal=False)
    assert_refused(broken, "edited after export")


def test_the_untouched_copies_load(kind, broken):
    """The cases above fail because of their edit, not because a copy fails anyway."""
    result = serve(broken, ["A man rides a bike." if kind == "translation" else "great value"])
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(result.stdout.splitlines()) == 1


# ---------------------------------------------------------------- the wrong class for the task


def test_a_translation_package_is_not_a_classifier(translation_package):
    with pytest.raises(PackageError, match="a 'translation' package, not a classification one"):
        OnnxClassifier(translation_package)


def test_a_classification_package_is_not_a_translator(classification_package):
    with pytest.raises(PackageError, match="a 'classification' package, not a translation one"):
        OnnxTranslator(classification_package)
