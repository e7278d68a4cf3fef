"""Each stage's `params:` in dvc.yaml lists exactly the params the stage reads.

The six stages of each task kind run in-process, in order, on tiny params (as `python -m tasks
<stage>` runs them: `tasks.__main__.run_stage`, which also reads task.kind to pick the kind's
module), each on a recorder of the params (tests/dvc/recorder.py). A param read that no
`params:` entry of the stage covers is a missing dependency: changing it would not re-run the
stage, and DVC would keep stale outputs. An entry that no stage run of either kind reads is a
dead one: changing it re-runs the stage for nothing. Params read while validating params.yaml
(the cross-field rules in tasks/params.py) are read before any stage runs, not by a stage; and
the reads of the checkpoint-resume fingerprint are not dependencies (tests/dvc/recorder.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.__main__ import run_stage
from tasks.common.paths import Paths
from tasks.params import parse_params
from tests.dvc.conftest import REPO, STAGES
from tests.dvc.recorder import ParamsRecorder, Reads, covered, touches

KINDS = ("classification", "translation")


def dvc_yaml_params() -> dict[str, list[str]]:
    """stage -> its `params:` entries (all of them keys of params.yaml)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = {}
    for name, stage in stages.items():
        entries = stage.get("params", [])
        assert all(isinstance(entry, str) for entry in entries), f"{name}: only params.yaml keys expected: {entries}"
        listed[name] = entries
    return listed


def record_reads(raw: dict, root: Path) -> dict[str, set[str]]:
    """stage -> the dotted params it read, running every stage in order in the workspace `root`."""
    params = parse_params(raw)
    reads: dict[str, set[str]] = {}
    for stage in STAGES:
        recorded = Reads()
        run_stage(stage, ParamsRecorder(params, recorded), Paths(root))
        reads[stage] = recorded.params
    return reads


@pytest.fixture(scope="module")
def reads(tmp_path_factory, classification_params, translation_params) -> dict[str, dict[str, set[str]]]:
    """kind -> stage -> params read: both kinds' pipelines, once for every test of this module."""
    raws = {"classification": classification_params, "translation": translation_params}
    return {kind: record_reads(raws[kind], tmp_path_factory.mktemp(kind)) for kind in KINDS}


def test_dvc_yaml_names_the_stages_the_entry_point_runs():
    assert tuple(dvc_yaml_params()) == STAGES


@pytest.mark.parametrize("params_file", ["params.yaml", "demos/translation.yaml"])
def test_every_dvc_yaml_param_is_a_key_of_both_kinds_params_files(params_file):
    """DVC fails a stage whose `params:` entry is missing from params.yaml (MissingParamsError)."""
    raw = yaml.safe_load((REPO / params_file).read_text())

    def has(key: str) -> bool:
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    missing = {stage: [entry for entry in entries if not has(entry)] for stage, entries in dvc_yaml_params().items()}
    assert not {stage: entries for stage, entries in missing.items() if entries}, missing


@pytest.mark.parametrize("kind", KINDS)
def test_every_param_a_stage_reads_is_in_its_dvc_yaml_params(reads, kind):
    listed = dvc_yaml_params()
    missing = {stage: sorted(read or "(all params)" for read in reads[kind][stage] if not covered(read, listed[stage]))
               for stage in STAGES}
    missing = {stage: found for stage, found in missing.items() if found}
    assert not missing, f"{kind}: params read but not in the stage's dvc.yaml `params:`: {missing}"
    assert "task.kind" in reads[kind]["ingest"], "the recorder sees the entry point's dispatch on task.kind"


def test_every_dvc_yaml_param_is_read_by_its_stage_for_some_kind(reads):
    dead = {stage: [entry for entry in entries
                    if not any(touches(read, entry) for kind in KINDS for read in reads[kind][stage])]
            for stage, entries in dvc_yaml_params().items()}
    dead = {stage: entries for stage, entries in dead.items() if entries}
    assert not dead, f"dvc.yaml `params:` entries no run of the stage reads (either kind): {dead}"
