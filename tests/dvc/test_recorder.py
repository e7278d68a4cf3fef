"""The params recorder test_stage_params relies on: what counts as a read of which params."""

from __future__ import annotations

import json
import pickle

import pytest

from tasks.common.training import fingerprint_of
from tasks.params import parse_params
from tests.dvc.recorder import ParamsRecorder, Reads, covered, touches


@pytest.fixture
def recorded():
    params = parse_params({"data": {"source": {"path": "a.tsv"}, "target": {"path": "b.tsv"}}})
    reads = Reads()
    return ParamsRecorder(params, reads), reads


def test_a_value_read_records_its_path_and_a_section_records_nothing_by_itself(recorded):
    p, reads = recorded
    finetune = p.finetune
    assert reads.params == set()
    assert finetune.learning_rate == 5e-5 and p.seed == 42
    assert getattr(p.evaluate.target_only, "strategy", None) is None  # not a field: no read
    assert reads.params == {"finetune.learning_rate", "seed"}


def test_whatever_sees_a_whole_section_reads_all_of_it(recorded):
    p, reads = recorded
    p.evaluate.target_only.model_dump()
    json.dumps({"split": p.data.split}, default=str)
    assert reads.params == {"evaluate.target_only", "data.split"}


def test_model_copy_records_what_is_read_of_the_copy_but_not_the_replaced_fields(recorded):
    p, reads = recorded
    copy = p.pretrain.model_copy(update={"max_steps": 7})
    assert copy.max_steps == 7 and copy.batch_size == 32
    assert reads.params == {"pretrain.batch_size"}


def test_the_resume_fingerprint_and_pickling_are_not_stage_reads(recorded):
    p, reads = recorded
    fingerprint_of("run", p.model, p.data)
    pickle.dumps(p.tokenize)
    assert reads.params == set() and reads.fingerprint == {"model", "data"}


def test_coverage_by_dvc_yaml_entries():
    assert covered("evaluate.generation.num_beams", ["evaluate"])
    assert covered("evaluate.generation.num_beams", ["evaluate.generation"])
    assert not covered("evaluate", ["evaluate.generation"])  # a whole-section read needs the section
    assert not covered("evaluate.generation_x", ["evaluate.generation"])
    assert touches("data.split", "data") and touches("data", "data.split") and not touches("model", "data")
