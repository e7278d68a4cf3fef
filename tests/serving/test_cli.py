"""`python -m serving PACKAGE` in stdin mode, run as a user runs it (a subprocess): one output
line per input line, in order (a blank line gets an error object in its place, so a consumer
pairing lines by position never gets shifted labels), each result printed as soon as it is
produced (streaming under `docker run -i`), and a --help that works."""

from __future__ import annotations

import json
import select
import subprocess
import sys

import numpy as np
import pytest

from serving.classifier import OnnxClassifier
from serving.translator import OnnxTranslator
from tests.serving.conftest import REPO, clean_env, json_lines, read_manifest_json, serve, write_manifest_json


def run_bytes(package, data: bytes, args=()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving", str(package), *args], input=data, cwd=REPO,
                          env=clean_env(), capture_output=True, timeout=300)


def read_line(process: subprocess.Popen, timeout: float = 120.0) -> str:
    """One line from the process's stdout, failing (not hanging) if none comes in `timeout`."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output line within {timeout}s"
    line = process.stdout.readline()
    assert line, f"stdout closed; stderr: {process.stderr.read()}"
    return line


def test_help_prints_usage_and_options_even_without_docstrings():
    for optimize in ("", "2"):  # PYTHONOPTIMIZE=2 (python -OO) strips __doc__
        env = {**clean_env(), "PYTHONOPTIMIZE": optimize}
        result = subprocess.run([sys.executable, "-m", "serving", "--help"], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("usage: python -m serving"), result.stdout
        for option in ("--port", "--host", "--max-batch-size", "--max-delay-ms", "--max-texts", "--max-chars",
                       "--beams", "--threads", "--precision", "stdin", "/v1/classify"):
            assert option in result.stdout, option


def test_classification_gives_one_line_per_input_line_in_order(classification_package, classification_texts):
    """50 texts (more than one read batch) with blank and whitespace-only lines among them:
    line N of the output answers line N of the input."""
    lines = list(classification_texts)
    lines[3:3] = [""]
    lines[10:10] = ["   \t"]
    lines[20:20] = ["\u200b\u200d"]  # zero-width space and joiner: nothing to read either
    rows = json_lines(serve(classification_package, lines))
    assert len(rows) == len(lines)
    assert rows[3] == {"error": "line 4 is empty", "line": 4}
    assert rows[10] == {"error": "line 11 is empty", "line": 11}
    assert rows[20] == {"error": "line 21 is empty", "line": 21}
    good = [row for i, row in enumerate(rows) if i not in (3, 10, 20)]
    assert [row["text"] for row in good] == classification_texts
    classifier = OnnxClassifier(classification_package)
    assert [row["label"] for row in good] == classifier.predict(classification_texts)
    np.testing.assert_allclose([row["logits"] for row in good], classifier.logits(classification_texts), atol=1e-5)
    for row in good:
        assert set(row) == {"text", "label", "probabilities", "logits"}
        assert list(row["probabilities"]) == classifier.labels
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_odd_lines_keep_their_place(classification_package):
    """CRLF endings, a line that is not UTF-8, a last line without a newline."""
    result = run_bytes(classification_package, b"great value\r\n\xff\xfe broken\nbroke after a day")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [row.get("text") for row in rows] == ["great value", None, "broke after a day"]
    assert rows[1] == {"error": "line 2 is not UTF-8 text", "line": 2}


def test_empty_input_gives_no_output(classification_package):
    result = serve(classification_package, [])
    assert result.returncode == 0 and result.stdout == "", result.stderr


def test_translation_keeps_line_positions(translation_package, translation_texts):
    texts = translation_texts[:6]
    rows = json_lines(serve(translation_package, [texts[0], "", *texts[1:]]))
    assert rows[1] == {"error": "line 2 is empty", "line": 2}
    rows = rows[:1] + rows[2:]
    translator = OnnxTranslator(translation_package)
    assert [row["source"] for row in rows] == texts
    assert [row["translation"] for row in rows] == translator.translate(texts, **translator.decoding())


@pytest.mark.parametrize("kind", ["classification", "translation"])
def test_results_stream_while_input_is_still_open(kind, request):
    """A line written is answered before stdin is closed (as under `docker run -i`)."""
    package = request.getfixturevalue(f"{kind}_package")
    texts = ["great value", "broke after a day"] if kind == "classification" else ["A man rides a bike.", "Two dogs play."]
    field = "text" if kind == "classification" else "source"
    process = subprocess.Popen([sys.executable, "-m", "serving", str(package)], cwd=REPO, env=clean_env(),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for text in texts:
            process.stdin.write(text + "\n")
            process.stdin.flush()
            assert json.loads(read_line(process))[field] == text
        process.stdin.write("\n")
        process.stdin.flush()
        assert json.loads(read_line(process)) == {"error": "line 3 is empty", "line": 3}
        process.stdin.close()
        assert process.wait(timeout=60) == 0, process.stderr.read()
        assert process.stdout.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            stream.close()


def test_a_bad_option_value_is_refused_before_loading(classification_package):
    result = serve(classification_package, ["x"], args=["--beams", "0"])
    assert result.returncode == 2 and "--beams" in result.stderr and "Traceback" not in result.stderr



def test_precision_and_threads_reach_the_classifier(classification_package, classification_texts):
    """--precision int8 --threads 1: the INT8 graph's logits, not the fp32 one's."""
    texts = classification_texts[:12]
    rows = json_lines(serve(classification_package, texts, args=["--precision", "int8", "--threads", "1"]))
    logits = np.array([row["logits"] for row in rows])
    int8 = OnnxClassifier(classification_package, precision="int8", threads=1)
    assert [row["label"] for row in rows] == int8.predict(texts)
    np.testing.assert_allclose(logits, int8.logits(texts), atol=1e-5)
    fp32 = OnnxClassifier(classification_package, precision="fp32").logits(texts)
    assert np.abs(logits - fp32).max() > 1e-4, "the INT8 graph must be the one that answered"


@pytest.mark.parametrize("mode", [[], ["--port", "0"]], ids=["stdin", "http"])
def test_int8_of_a_package_without_int8_graphs_is_one_line_and_exit_1(classification_package, package_copy, mode):
    package = package_copy(classification_package)
    manifest = read_manifest_json(package)
    del manifest["files"]["model.int8.onnx"]
    (package / "model.int8.onnx").unlink()
    write_manifest_json(package, manifest)  # re-sealed: a package exported with export.int8: false
    result = serve(package, ["great value"], args=["--precision", "int8", *mode])
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: serve: "), result.stderr
    assert "no INT8 graph (model.int8.onnx not in files)" in result.stderr and result.stdout == ""
