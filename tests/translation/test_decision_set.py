"""The frozen decision set for translation: the target test pairs are drawn once (from a random
split or a predefined test file) and read back by every later ingest; a refresh sends new pairs to
train/val only; another language pair needs an explicit reset."""

from __future__ import annotations

import pytest

from tasks.common.errors import DataError
from tasks.common.io import read_jsonl
from tasks.common.paths import SPLITS, Paths
from tasks.translation.ingest import run
from tests.translation.test_ingest import make_params, section, sentences, text_section, write_pair, write_split_dir


@pytest.fixture
def workspace(tmp_path) -> Paths:
    return Paths(root=tmp_path / "ws")


def splits(workspace: Paths) -> dict[str, list[dict]]:
    return {split: read_jsonl(workspace.split_file("target", split)) for split in SPLITS}


def sources(rows: list[dict]) -> set[str]:
    return {row["src"] for row in rows}


def write_pool(folder, n: int, start: int = 0) -> None:
    src = sentences("pool en", n, start)
    write_pair(folder, "pairs", src, [f"{s} in fr" for s in src], ("en", "fr"))


def test_a_random_split_is_frozen_and_a_refresh_only_trains(tmp_path, workspace):
    source = text_section(write_split_dir(tmp_path / "src", sizes=(30, 6, 6)))
    pool = tmp_path / "tgt"
    write_pool(pool, 50)
    params = make_params(source, section(pool, ("en", "fr"), format="text"))
    first = run(params, workspace)["target"]["decision_set"]
    before = {split: workspace.split_file("target", split).read_bytes() for split in SPLITS}
    assert first["frozen"] == "drawn by this run" and first["rows"] == 10
    run(params, workspace)  # unchanged data: the same bytes
    assert {split: workspace.split_file("target", split).read_bytes() for split in SPLITS} == before
    test_before = splits(workspace)["test"]
    write_pool(pool, 80)  # 30 new pairs
    entry = run(params, workspace)["target"]["decision_set"]
    after = splits(workspace)
    assert after["test"] == test_before and entry["in_data"] == 10
    new = set(sentences("pool en", 30, start=50))
    assert new <= sources(after["train"]) | sources(after["val"])
    assert not sources(test_before) & (sources(after["train"]) | sources(after["val"]))


def test_a_refreshed_test_file_goes_to_train_and_another_language_pair_needs_a_reset(tmp_path, workspace):
    source = text_section(write_split_dir(tmp_path / "src", sizes=(30, 6, 6)))
    target_dir = write_split_dir(tmp_path / "tgt", langs=("en", "fr"), sizes=(20, 5, 5), prefix="t ")
    params = make_params(source, text_section(target_dir, ("en", "fr")))
    run(params, workspace)
    test_before = splits(workspace)["test"]
    src = sentences("fresh test en", 4)
    write_pair(target_dir, "test", src, [f"{s} in fr" for s in src], ("en", "fr"))  # a new test file
    entry = run(params, workspace)["target"]["decision_set"]
    after = splits(workspace)
    assert after["test"] == test_before
    assert entry["test_rows_moved_to_train"] == 4 and set(src) <= sources(after["train"])
    assert entry["absent_from_data"] == 5
    target_dir_cs = write_split_dir(tmp_path / "tgt_cs", langs=("en", "cs"), sizes=(20, 5, 5), prefix="t ")
    with pytest.raises(DataError, match=r"tgt_lang \['cs'\]|tgt_lang \['fr'\] not in this run's data.target.languages.tgt \['cs'\]"):
        run(make_params(source, text_section(target_dir_cs, ("en", "cs"))), workspace)
