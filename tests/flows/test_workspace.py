"""Your own params in a workspace of their own (`make run PARAMS=my.yaml`, flows/workspace.py):
inputs linked from the repository, and a missing input named by its params field
(`python -m tasks check --inputs`, run by the flow before DVC) instead of DVC's `[Errno 2]`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import flows.workspace as workspace
from tasks.__main__ import input_problems
from tasks.params import parse_params
from tests.conftest import REPO, with_overrides

PAIR = {"format": "text", "languages": {"src": "en", "tgt": "fr"}}


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def demo_params(**overrides) -> dict:
    return with_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), overrides)


# ---------------------------------------------------------------- check --inputs


def classification(source: dict, target: dict):
    return parse_params({"data": {"source": source, "target": target}})


def translation(source: dict, target: dict):
    return parse_params({"task": {"kind": "translation"}, "data": {"source": source, "target": target},
                         "evaluate": {"baselines": ["target_only", "zero_shot"]}})


def test_input_problems_name_the_field_and_the_path(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("have.csv").write_text("text,label\n")
    assert input_problems(classification({"path": "have.csv"}, {"path": "data/x.csv"})) == [
        "data.target.path: data/x.csv: no such file or directory"]
    url = {"path": "https://example.org/t.csv", "sha256": "0" * 64}
    hub = {"path": "org/some_dataset", "format": "hf"}
    assert input_problems(classification(url, hub)) == []  # ingest fetches those
    local_hf = {"path": "data/raw/org/set", "format": "hf"}  # no hub id has two slashes
    assert input_problems(classification(local_hf, {"path": "have.csv"})) == [
        "data.source.path: data/raw/org/set: no such file or directory"]


def test_input_problems_of_text_pairs_mirror_the_translation_reader(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mt.en").write_text("a\n")
    Path("mt.fr.gz").write_bytes(b"")  # <path>.<lang>.gz counts
    Path("multi30k").mkdir()
    splits = {"path": "multi30k", "splits": {"train": "train", "val": "val", "test": "test"}}
    Path("pairs").mkdir()  # a directory holding one pair: what DVC can hash
    assert input_problems(translation({**PAIR, "path": "pairs"}, {**PAIR, **splits})) == []
    # A bare stem reads with `python -m tasks ingest`, but the flow runs DVC, which cannot hash it.
    assert input_problems(translation({**PAIR, "path": "mt"}, {**PAIR, **splits})) == [
        "data.source.path: mt is a stem, which DVC cannot hash: move its two files into a directory of their own and set path to it"]
    missing = {**PAIR, "path": "other", "languages": {"src": "en", "tgt": "de"}}
    no_dir = {**PAIR, **splits, "path": "nope"}
    assert input_problems(translation(missing, no_dir)) == [
        "data.source.path: no other.en[.gz] or other.de[.gz] (format text reads <path>.<lang>[.gz])",
        "data.target.path: nope: no such file or directory"]


def check_inputs(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks", "check", "--inputs"], cwd=root, env=env(),
                          capture_output=True, text=True, timeout=60)


def test_check_inputs_cli_is_one_line(tmp_path: Path, movie_file: Path, amazon_file: Path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params(**{"data.source.path": str(movie_file),
                                                                        "data.target.path": "data/x.csv"})))
    done = check_inputs(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == ["error: check: data.target.path: data/x.csv: no such file or directory"]

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(demo_params(**{"data.source.path": str(movie_file),
                                                                        "data.target.path": str(amazon_file)})))
    done = check_inputs(tmp_path)
    assert done.returncode == 0 and "ok, inputs found" in done.stdout, done.stderr


def test_check_names_a_key_dvc_yaml_lists_that_the_params_file_leaves_out(tmp_path: Path, movie_file: Path,
                                                                           amazon_file: Path):
    """The schema fills a left-out key with its default, but DVC reads params.yaml itself: a file
    without evaluate.generation (translation's, listed by export) trained every stage and then
    failed at export with `Parameters 'evaluate.generation' are missing`. In a workspace (dvc.yaml
    there) the check the flow runs before DVC names it instead."""
    params = demo_params(**{"data.source.path": str(movie_file), "data.target.path": str(amazon_file)})
    del params["evaluate"]["generation"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert check_inputs(tmp_path).returncode == 0  # no dvc.yaml: not a workspace, nothing for DVC to read
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    done = check_inputs(tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: check: params.yaml: missing evaluate.generation (export): "), line
    params["evaluate"]["generation"] = {"num_beams": 5, "max_new_tokens": 128}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert check_inputs(tmp_path).returncode == 0


# ---------------------------------------------------------------- the workspace's links


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Path:
    """A stand-in for the repository root, with an input of the user's under data/raw."""
    root = tmp_path / "repo"
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "tickets.csv").write_text("text,label\n")
    (root / "mt.en").write_text("a\n")
    (root / "mt.fr").write_text("b\n")
    monkeypatch.setattr(workspace, "REPO", root)
    return root


def test_external_data_is_linked_once_the_repository_has_it(repo: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    workspace.link_external_data(ws)
    assert not (ws / "data" / "external").exists()  # made before `make data`: nothing to link yet
    (repo / "data" / "external").mkdir()
    workspace.link_external_data(ws)  # the next refresh links it
    assert (ws / "data" / "external").resolve() == (repo / "data" / "external").resolve()

    (ws / "data" / "external").unlink()
    os.symlink(tmp_path / "gone", ws / "data" / "external")  # a dangling link is replaced
    workspace.link_external_data(ws)
    assert (ws / "data" / "external").resolve() == (repo / "data" / "external").resolve()


def test_relative_inputs_are_linked_from_the_repository(repo: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    params = demo_params(**{"data.source.path": "data/raw/tickets.csv", "data.target.path": "data/raw/none.csv"})
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    workspace.link_inputs(ws)
    assert (ws / "data" / "raw" / "tickets.csv").resolve() == (repo / "data" / "raw" / "tickets.csv").resolve()
    assert not (ws / "data" / "raw").is_symlink()  # only the input: data/ stays the workspace's own
    assert not (ws / "data" / "raw" / "none.csv").exists()

    pairs = {"task": {"kind": "translation"}, "data": {"source": {**PAIR, "path": "mt"}, "target": {**PAIR, "path": "mt"}},
             "evaluate": {"baselines": ["target_only"]}}
    (ws / "params.yaml").write_text(yaml.safe_dump(pairs))
    workspace.link_inputs(ws)
    assert sorted(path.name for path in ws.glob("mt.*")) == ["mt.en", "mt.fr"]


@pytest.mark.parametrize("relative", ["data", "models/x.csv", "../x.csv", "data/prepared/source/train.jsonl"])
def test_nothing_is_linked_over_a_stage_output_or_outside(relative: str):
    assert not workspace.linkable(Path(relative))


def test_reset_params_says_when_it_replaces_a_different_file(tmp_path: Path, capsys):
    mine, dest = tmp_path / "my.yaml", tmp_path / "ws" / "params.yaml"
    dest.parent.mkdir()
    mine.write_text("seed: 1\n")
    dest.write_text("seed: 2\n")
    workspace.copy_params(mine, dest, reset=False)
    assert dest.read_text() == "seed: 2\n"
    workspace.copy_params(mine, dest, reset=True)
    assert dest.read_text() == "seed: 1\n" and f"{dest}: replaced by {mine}" in capsys.readouterr().err


@pytest.mark.parametrize("where", [".", "tasks", "flows/ws", "serving/x/y"])
def test_a_workspace_is_never_the_repository_or_inside_its_code(repo: Path, tmp_path: Path, where: str):
    # `make run PARAMS=my.yaml WORKSPACE=.` once deleted the repository's tasks/, serving/ and
    # flows/ (copy_code removes the workspace's copy, then copies from what it just removed);
    # a workspace inside flows/ was copied into itself until a RecursionError
    for name in workspace.CODE:
        (repo / name).mkdir()
        (repo / name / "keep.py").write_text("# the user's code\n")
    mine = tmp_path / "my.yaml"
    mine.write_text("seed: 1\n")
    with pytest.raises(workspace.PipelineError, match="is the repository itself|is inside the code folder"):
        workspace.create((repo / where).resolve(), mine, reset_params=True)
    assert all((repo / name / "keep.py").is_file() for name in workspace.CODE)
    assert not (repo / "params.yaml").exists() and not (repo / "flows" / "ws").exists()


def test_a_workspace_path_that_is_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "my.yaml").write_text("seed: 1\n")
    done = subprocess.run([sys.executable, "-m", "flows.workspace", str(tmp_path / "my.yaml"), "--params",
                           str(tmp_path / "my.yaml")], cwd=REPO, env=env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: workspace: {tmp_path / 'my.yaml'}: exists and is not a directory"


def test_a_params_file_that_does_not_validate_is_said_when_the_workspace_is_made(tmp_path: Path, capsys):
    mine = tmp_path / "my.yaml"
    mine.write_text(yaml.safe_dump({**demo_params(), "seed": -1}))
    workspace.main([str(tmp_path / "ws"), "--params", str(mine)])
    out, err = capsys.readouterr()
    assert "workspace ready" in out and (tmp_path / "ws" / "params.yaml").is_file()
    assert err.startswith("warning: ") and "seed" in err and "no stage will run until it is fixed" in err
    mine.write_text(yaml.safe_dump(demo_params()))
    workspace.main([str(tmp_path / "ws"), "--params", str(mine), "--reset-params"])
    assert "warning" not in capsys.readouterr().err


# ---------------------------------------------------------------- make run PARAMS=, the flow


def test_make_run_params_runs_a_workspace_of_its_own():
    def commands(*args: str) -> list[str]:
        done = subprocess.run(["make", "-n", "run", *args], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return [line for line in done.stdout.splitlines() if "flows." in line]

    assert commands() == [".venv/bin/python -m flows.pipeline"]
    assert commands("PARAMS=configs/shop.yaml") == [
        ".venv/bin/python -m flows.workspace runs/shop --params configs/shop.yaml --reset-params",
        ".venv/bin/python -m flows.pipeline --root runs/shop"]
    assert commands("PARAMS=shop.yaml", "WORKSPACE=/tmp/elsewhere")[-1] == ".venv/bin/python -m flows.pipeline --root /tmp/elsewhere"


def test_flow_stops_at_a_missing_input_with_its_field(tmp_path: Path, movie_file: Path):
    mine = tmp_path / "my.yaml"
    mine.write_text(yaml.safe_dump(demo_params(**{"data.source.path": str(movie_file), "data.target.path": "data/x.csv"})))
    ws = tmp_path / "runs" / "my"
    subprocess.run([sys.executable, "-m", "flows.workspace", str(ws), "--params", str(mine)],
                   cwd=REPO, env=env(), check=True, capture_output=True, timeout=120)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flows.pipeline", "--root", str(ws)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "error: check: data.target.path: data/x.csv: no such file or directory"
    assert "Errno" not in done.stdout + done.stderr and not (ws / "dvc.lock").exists()
    assert time.monotonic() - started < 60, "the check runs before Prefect or DVC start"
