"""Bad parallel data (issue 10) through the translation ingest: every pair read is accounted for
per file, values that are not text are quarantined, duplicates are found as leakage is
(case-insensitively), a split left empty still writes the quarantine file and report, and any
bytes in line-aligned files end in outputs or one PipelineError (hypothesis)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.common.errors import DataError, PipelineError
from tasks.common.io import read_jsonl
from tasks.common.paths import Paths
from tasks.translation.ingest import run
from tests.translation.test_ingest import make_params, section, sentences, text_section, write_pair, write_split_dir


@pytest.fixture
def workspace(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "ws")


def assert_conserved(report: dict) -> None:
    for name in ("source", "target"):
        for file, account in report[name]["files"].items():
            dropped = sum(account["quarantined"].values()) + sum(account["dropped"].values())
            assert account["rows_read"] == account["kept"] + dropped, (file, account)


def test_every_pair_is_accounted_for_per_file(tmp_path, workspace):
    source = write_split_dir(tmp_path / "src", sizes=(30, 6, 6))
    target = tmp_path / "tgt"
    write_split_dir(target, langs=("en", "fr"), sizes=(30, 6, 6), prefix="t ")
    src_lines = sentences("t train en", 30, 0) + ["T TRAIN EN SENTENCE NUMBER 1", "", "t val en sentence number 30"]
    write_pair(target, "train", src_lines, [f"{s} in fr" for s in src_lines[:30]] + ["dup fr", "empty src", "leak fr"], ("en", "fr"))
    report = run(make_params(text_section(source), text_section(target, ("en", "fr"))), workspace)
    assert_conserved(report)
    account = report["target"]["files"][str(target / "train.en")]
    assert account["rows_read"] == 33
    assert account["quarantined"] == {"empty_source": 1}
    assert account["dropped"] == {"duplicates.same_source": 1, "leakage.train_vs_val": 1}


def test_values_that_are_not_text_are_quarantined(tmp_path, workspace):
    source = write_split_dir(tmp_path / "src", sizes=(30, 6, 6))
    rows = [{"en": f"english {i}", "fr": f"french {i}"} for i in range(40)]
    rows[2]["fr"], rows[3]["en"] = ["a", "list"], 42
    target = tmp_path / "pairs.jsonl"
    target.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = run(make_params(text_section(source), section(target, ("en", "fr"))), workspace)["target"]
    assert report["quarantined"]["by_reason"]["not_text"] == 2 and report["kept"] == 38
    rows_out = read_jsonl(workspace.quarantine)
    assert {row["file"] for row in rows_out} == {str(target)}


def test_a_split_left_empty_still_writes_the_quarantine_and_report(tmp_path, workspace):
    source = write_split_dir(tmp_path / "src", sizes=(30, 6, 6))
    target = write_split_dir(tmp_path / "tgt", langs=("en", "fr"), sizes=(30, 6, 6), prefix="t ")
    write_pair(target, "val", [""] * 6, ["x"] * 6, ("en", "fr"))  # every val pair empty
    with pytest.raises(DataError, match="split 'val' has no usable pairs"):
        run(make_params(text_section(source), text_section(target, ("en", "fr"))), workspace)
    assert [p.name for p in workspace.prepared.iterdir()] == ["quarantine.jsonl"]
    assert len(read_jsonl(workspace.quarantine)) == 6
    report = json.loads(workspace.data_report.read_text())
    assert "split 'val'" in report["error"] and report["target"]["quarantined"]["by_reason"]["empty_source"] == 6
    assert_conserved(report)


line_text = st.text(alphabet=st.sampled_from('ab Z,"\t\r\x00é漢🙂'), max_size=25)
side = st.one_of(
    st.binary(max_size=300),
    st.lists(line_text, min_size=0, max_size=60).map(lambda lines: "\n".join(lines).encode("utf-8")),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(src=side, tgt=side)
def test_any_bytes_in_aligned_files_end_in_outputs_or_one_line(src, tgt):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = write_split_dir(root / "src", sizes=(30, 6, 6))
        (root / "in").mkdir()
        (root / "in" / "pairs.en").write_bytes(src)
        (root / "in" / "pairs.fr").write_bytes(tgt)
        params = make_params(text_section(source), section(root / "in" / "pairs", ("en", "fr"), format="text"))
        try:
            assert_conserved(run(params, Paths(root / "ws")))
        except PipelineError as err:
            assert "\n" not in str(err).strip()
        written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        outputs = ("src/", "in/", "ws/data/prepared/", "ws/data/decision_set/", "ws/reports/data.json")
        assert all(name.startswith(outputs) for name in written), written
        assert (root / "in" / "pairs.en").read_bytes() == src


def test_a_directory_holding_one_pair_reads_like_its_stem(tmp_path, workspace):
    """Without splits, `path` may be the directory of `<stem>.<lang>` files: DVC can hash it."""
    source = write_split_dir(tmp_path / "src", sizes=(30, 6, 6))
    src = sentences("pair en", 40)
    write_pair(tmp_path / "pairs", "corpus", src, [f"{s} fr" for s in src], ("en", "fr"))
    by_dir = run(make_params(text_section(source), section(tmp_path / "pairs", ("en", "fr"), format="text")), workspace)
    by_stem = run(make_params(text_section(source), section(tmp_path / "pairs" / "corpus", ("en", "fr"), format="text")), workspace)
    assert by_dir["target"]["splits"] == by_stem["target"]["splits"] and by_dir["target"]["kept"] == 40
    write_pair(tmp_path / "pairs", "other", src, src, ("en", "fr"))
    with pytest.raises(DataError, match=r"expected one pair <stem>\.en \+ <stem>\.fr .* found corpus, other"):
        run(make_params(text_section(source), section(tmp_path / "pairs", ("en", "fr"), format="text")), workspace)
