"""Ingest for task.kind translation (tasks/translation/ingest.py): every input format, quarantine,
duplicates, leakage, max_rows, the real Multi30k through run() and the CLI; and the Multi30k
demo-data download (tasks/common/demo_data.py) against a local HTTP server."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.common import demo_data
from tasks.common.errors import DataError
from tasks.common.io import read_json, read_jsonl
from tasks.common.paths import SPLITS, Paths
from tasks.translation.ingest import run
from tasks.params import Params, parse_params
from tests.conftest import REPO

ROW_KEYS = {"id", "src", "tgt", "src_lang", "tgt_lang"}


# ---------------------------------------------------------------- helpers


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    """One line each, `\\n`-terminated; bytes are written as they are (undecodable tests); .gz compressed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def sentences(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix} sentence number {i}" for i in range(start, start + n)]


def write_pair(folder: Path, stem: str, src: list, tgt: list, langs=("en", "de"), gz: bool = False) -> None:
    suffix = ".gz" if gz else ""
    write_lines(folder / f"{stem}.{langs[0]}{suffix}", src)
    write_lines(folder / f"{stem}.{langs[1]}{suffix}", tgt)


def write_split_dir(folder: Path, langs=("en", "de"), sizes=(12, 4, 4), prefix: str = "") -> Path:
    """train/val/test line-aligned files with distinct sentences in each split."""
    start = 0
    for split, n in zip(SPLITS, sizes):
        src = sentences(f"{prefix}{split} {langs[0]}", n, start)
        write_pair(folder, split, src, [f"{s} in {langs[1]}" for s in src], langs)
        start += n
    return folder


def section(path: Path | str, langs=("en", "de"), **extra) -> dict:
    return {"path": str(path), "languages": {"src": langs[0], "tgt": langs[1]}, **extra}


def text_section(folder: Path, langs=("en", "de"), **extra) -> dict:
    return section(folder, langs, format="text", splits={"train": "train", "val": "val", "test": "test"}, **extra)


def make_params(source: dict, target: dict, data: dict | None = None, **top) -> Params:
    raw = {"task": {"kind": "translation"}, "evaluate": {"baselines": ["target_only"]}, **top}
    return parse_params({**raw, "data": {"source": source, "target": target, **(data or {})}})


@pytest.fixture
def workspace(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "ws")


@pytest.fixture
def target_dir(tmp_path: Path) -> Path:
    """A valid en->fr target pair, for tests about the source."""
    return write_split_dir(tmp_path / "target", ("en", "fr"), prefix="target ")


@pytest.fixture
def ingest(workspace: Paths, target_dir: Path):
    """ingest(source_section, target=None, data=None, **top) -> report, written under `workspace`."""

    def go(source: dict, target: dict | None = None, data: dict | None = None, **top) -> dict:
        return run(make_params(source, target or text_section(target_dir, ("en", "fr")), data, **top), workspace)

    return go


def prepared(workspace: Paths, domain: str = "source") -> dict[str, list[dict]]:
    return {split: read_jsonl(workspace.split_file(domain, split)) for split in SPLITS}


def rows_accounted(report: dict) -> int:
    """Every pair read ends in exactly one place."""
    return report["kept"] + report["quarantined"]["total"] + report["duplicates"]["total"] + report["leakage_removed"]["total"]


# ---------------------------------------------------------------- formats


def test_text_with_predefined_splits_writes_the_contract_rows(tmp_path, ingest, workspace):
    report = ingest(text_section(write_split_dir(tmp_path / "src")))
    rows = prepared(workspace)
    assert {split: len(r) for split, r in rows.items()} == {"train": 12, "val": 4, "test": 4}
    first = rows["train"][0]
    assert set(first) == ROW_KEYS
    assert first == {"id": "train:1", "src": "train en sentence number 0", "tgt": "train en sentence number 0 in de",
                     "src_lang": "en", "tgt_lang": "de"}
    assert report["task"] == "translation"
    assert report["source"]["read"]["train"]["files"] == [str(tmp_path / "src" / "train.en"), str(tmp_path / "src" / "train.de")]
    assert report["source"]["rows_read"] == 20 == rows_accounted(report["source"])
    assert prepared(workspace, "target")["test"][0]["tgt_lang"] == "fr"


def test_gz_files_without_splits_get_a_seeded_random_split(tmp_path, workspace, target_dir):
    src = sentences("random", 40)
    write_pair(tmp_path / "corpus", "all", src, [s.upper() for s in src], gz=True)
    params = make_params(section(tmp_path / "corpus" / "all", format="text"), text_section(target_dir, ("en", "fr")))
    report = run(params, workspace)
    sizes = {split: report["source"]["splits"][split]["rows"] for split in SPLITS}
    assert sizes == {"train": 28, "val": 4, "test": 8}  # fractions 0.1 / 0.2 of 40
    first = prepared(workspace)
    assert sorted(r["src"] for split in SPLITS for r in first[split]) == sorted(src)
    assert all(r["tgt"] == r["src"].upper() for r in first["train"])
    run(params, Paths(root=workspace.root.parent / "again"))  # same seed, same split
    assert prepared(Paths(root=workspace.root.parent / "again")) == first


def test_tsv_with_default_language_columns(tmp_path, ingest, workspace):
    path = tmp_path / "pairs.tsv"
    path.write_text("id\ten\tde\n" + "".join(f"r{i}\tHello {i}\tHallo {i}\n" for i in range(20)), encoding="utf-8")
    report = ingest(section(path))
    assert report["source"]["kept"] == 20
    rows = [r for split in prepared(workspace).values() for r in split]
    assert {(r["id"], r["src"], r["tgt"]) for r in rows} == {(f"r{i}", f"Hello {i}", f"Hallo {i}") for i in range(20)}


def test_jsonl_with_configured_columns(tmp_path, ingest, workspace):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"english": f"cat {i}", "german": f"Katze {i}"}) + "\n" for i in range(20)))
    report = ingest(section(path, columns={"source": "english", "target": "german"}))
    assert report["source"]["kept"] == 20
    assert {r["tgt"] for r in prepared(workspace)["test"]} <= {f"Katze {i}" for i in range(20)}


def test_missing_column_names_the_file_and_the_field(tmp_path, ingest):
    path = tmp_path / "pairs.tsv"
    path.write_text("en\tgerman\nHello\tHallo\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        ingest(section(path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("data.source.columns.target: column 'de' not in ")
    assert str(path) in message and "columns: en, german" in message


def test_hf_saved_dataset_with_a_translation_column_and_named_splits(tmp_path, ingest, workspace):
    import datasets

    def split(n: int, start: int) -> datasets.Dataset:
        rows = [{"en": f"hf {i} en", "de": f"hf {i} de"} for i in range(start, start + n)]
        return datasets.Dataset.from_dict({"translation": rows})

    saved = tmp_path / "hf"
    datasets.DatasetDict({"train": split(10, 0), "validation": split(3, 10), "test": split(5, 20)}).save_to_disk(str(saved))
    report = ingest(section(saved, format="hf", splits={"val": "validation"}))
    assert {s: report["source"]["splits"][s]["rows"] for s in SPLITS} == {"train": 10, "val": 3, "test": 5}
    assert prepared(workspace)["val"][0] == {"id": "1", "src": "hf 10 en", "tgt": "hf 10 de", "src_lang": "en", "tgt_lang": "de"}
    with pytest.raises(DataError, match=r"data.source.splits.val: split 'dev' not in .* \(splits: train, validation, test\)"):
        ingest(section(saved, format="hf", splits={"val": "dev"}))


# ---------------------------------------------------------------- errors


def test_misaligned_files_name_both_files_and_counts_and_write_nothing(tmp_path, ingest, workspace):
    folder = write_split_dir(tmp_path / "src")
    write_lines(folder / "val.de", sentences("short", 3))
    with pytest.raises(DataError) as caught:
        ingest(text_section(folder))
    message = str(caught.value)
    assert f"{folder / 'val.en'} has 4 lines but {folder / 'val.de'} has 3" in message and "\n" not in message
    assert not workspace.prepared.exists() and not workspace.data_report.exists()


def test_a_split_with_no_usable_pairs_is_an_error(tmp_path, ingest):
    folder = write_split_dir(tmp_path / "src")
    write_pair(folder, "val", ["", " "], ["x", "y"])
    with pytest.raises(DataError, match=r"data.source \(.*\): split 'val' has no usable pairs \(read 18, quarantined 2 \(empty_source 2\)"):
        ingest(text_section(folder))


def test_cli_prints_one_error_line_and_exits_1(tmp_path):
    folder = write_split_dir(tmp_path / "src")
    write_lines(folder / "test.de", sentences("short", 1))
    write_split_dir(tmp_path / "tgt", ("en", "fr"))
    data = {"source": text_section(Path("src")), "target": text_section(Path("tgt"), ("en", "fr"))}
    assert_one_error_line(cli(tmp_path, data), "error: ingest: data.source.path: src/test.en has 4 lines but src/test.de has 1")
    data["target"].pop("languages")  # a schema error: caught before any file is read
    assert_one_error_line(cli(tmp_path, data), "data.target.languages is required for task.kind translation")
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


def assert_one_error_line(result: subprocess.CompletedProcess, expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ingest: ") and expected in lines[0], lines[0]


def cli(cwd: Path, data: dict) -> subprocess.CompletedProcess:
    """`python -m tasks.ingest` in `cwd` with PIPELINE_PARAMS at a translation params file."""
    params = {"task": {"kind": "translation"}, "evaluate": {"baselines": ["target_only"]}, "data": data}
    (cwd / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {**os.environ, "PIPELINE_PARAMS": str(cwd / "params.yaml"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "tasks", "ingest"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- quarantine, duplicates, leakage, max_rows


def test_empty_side_over_long_and_undecodable_pairs_are_quarantined(tmp_path, ingest, workspace):
    folder = write_split_dir(tmp_path / "src")
    src = sentences("train", 12)
    tgt = [f"{s} de" for s in src]
    src[1], tgt[2] = "   ", ""
    src[3] = "word " * 9
    tgt[4] = b"caf\xe9 latin-1"
    write_pair(folder, "train", src, tgt)
    report = ingest(text_section(folder), data={"max_words": 8})["source"]
    assert report["quarantined"]["by_reason"] == {
        "undecodable": 1, "malformed_row": 0, "unbalanced_quote": 0, "wrong_field_count": 0, "bad_json": 0,
        "not_text": 0, "empty_source": 1, "empty_target": 1, "over_long": 1, "suspect_alignment": 0,
    }
    assert report["quarantined"]["total"] == 4 and report["splits"]["train"]["rows"] == 8
    quarantine = {row["kind"]: row for row in read_jsonl(workspace.quarantine)}
    assert (quarantine["empty_source"]["file"], quarantine["empty_source"]["row"]) == (str(folder / "train.en"), 2)
    assert (quarantine["empty_target"]["file"], quarantine["empty_target"]["row"]) == (str(folder / "train.de"), 3)
    assert quarantine["over_long"]["reason"] == "source has 9 words, max_words 8"
    undecodable = quarantine["undecodable"]
    assert (undecodable["file"], undecodable["row"], undecodable["domain"]) == (str(folder / "train.de"), 5, "source")
    assert "train.de line 5" in undecodable["reason"]
    assert rows_accounted(report) == report["rows_read"] == 20


def test_leaked_sources_leave_train_and_are_counted(tmp_path, workspace):
    source = write_split_dir(tmp_path / "src")
    target = write_split_dir(tmp_path / "tgt", ("en", "fr"), prefix="target ")
    val_en, test_en, target_test_en = (read_lines(folder / name) for folder, name in
                                       ((source, "val.en"), (source, "test.en"), (target, "test.en")))
    # a val sentence, a test sentence (other case: still the same sentence), a target test sentence
    src = sentences("train", 8) + [val_en[0], test_en[0].upper(), target_test_en[0]]
    write_pair(source, "train", src, [f"t{i}" for i in range(len(src))])
    report = run(make_params(text_section(source), text_section(target, ("en", "fr"))), workspace)
    counts = report["source"]
    assert counts["leakage_removed"] == {"total": 3, "train_vs_test": 1, "train_vs_val": 1, "source_train_vs_target_test": 1}
    assert [r["src"] for r in prepared(workspace)["train"]] == sentences("train", 8)
    assert report["target"]["test_sources_in_source_train"] == 1
    assert len(prepared(workspace, "target")["test"]) == 4  # the frozen target test split stays whole
    assert len(prepared(workspace)["val"]) == 4 and len(prepared(workspace)["test"]) == 4
    assert rows_accounted(counts) == counts["rows_read"] == 19


def test_duplicate_pairs_and_repeated_sources_keep_the_first(tmp_path, ingest, workspace):
    folder = write_split_dir(tmp_path / "src")
    src = sentences("train", 6) + ["train sentence number 0", "train sentence  number 1", "train sentence number 2"]
    tgt = [f"t{i}" for i in range(6)] + ["t0", "different", "t2"]
    write_pair(folder, "train", src, tgt)
    counts = ingest(text_section(folder))["source"]
    assert counts["duplicates"] == {"total": 3, "same_pair": 2, "same_source": 1}
    train = prepared(workspace)["train"]
    assert [r["tgt"] for r in train] == [f"t{i}" for i in range(6)]  # the first copy, in input order


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_max_rows_caps_train_only(tmp_path, ingest, workspace):
    report = ingest(text_section(write_split_dir(tmp_path / "src", sizes=(12, 5, 6)), max_rows=3))["source"]
    assert {s: report["splits"][s]["rows"] for s in SPLITS} == {"train": 3, "val": 5, "test": 6}
    assert report["read"]["train"] == {"files": report["read"]["train"]["files"], "rows": 3, "rows_in_input": 12}
    assert [r["id"] for r in prepared(workspace)["train"]] == ["train:1", "train:2", "train:3"]


# ---------------------------------------------------------------- real data


def test_real_multi30k_through_run_with_predefined_splits(multi30k_dir, workspace):
    splits = {"train": "train", "val": "val", "test": "test_2016_flickr"}
    source = section(multi30k_dir, ("en", "de"), format="text", splits=splits, max_rows=300)
    target = section(multi30k_dir, ("en", "fr"), format="text", splits=splits, max_rows=300)
    report = run(make_params(source, target), workspace)
    for name, lang in (("source", "de"), ("target", "fr")):
        sizes = {s: report[name]["splits"][s]["rows"] for s in SPLITS}
        assert sizes["val"] == 1014 and sizes["test"] == 1000 and 290 <= sizes["train"] <= 300
        assert report[name]["read"]["train"]["rows_in_input"] == 29000
        test = read_jsonl(workspace.split_file(name, "test"))
        with gzip.open(multi30k_dir / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as handle:
            assert [r["src"] for r in test] == [" ".join(line.split()) for line in handle]
        assert {r["tgt_lang"] for r in test} == {lang}
    assert read_json(workspace.data_report) == report


# ---------------------------------------------------------------- Multi30k demo data (tasks/common/demo_data.py)


@pytest.fixture
def http_raw(http_root):
    """The local HTTP server of tests/unit/conftest.py, files under raw/ like the public Multi30k URLs."""
    folder, base = http_root
    return folder, f"{base}/raw"


def serve_two(multi30k_dir: Path, folder: Path) -> dict[str, str]:
    (folder / "raw").mkdir()
    names = ["val.en.gz", "val.fr.gz"]
    for name in names:
        (folder / "raw" / name).write_bytes((multi30k_dir / name).read_bytes())
    return {name: demo_data.MULTI30K_SHA256[name] for name in names}


def test_pinned_hashes_match_shared_sha256sums(multi30k_dir):
    sums = dict(reversed(line.split()) for line in (multi30k_dir.parent / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert {name: sums[f"multi30k/{name}"] for name in demo_data.MULTI30K_SHA256} == demo_data.MULTI30K_SHA256
    assert len(demo_data.MULTI30K_SHA256) == 12


def test_multi30k_is_downloaded_and_checked_without_shared_data(multi30k_dir, http_raw, tmp_path):
    folder, base = http_raw
    files = serve_two(multi30k_dir, folder)
    external = tmp_path / "data" / "external"
    message = demo_data.ensure_multi30k(external, shared=tmp_path / "nowhere", base_url=base, files=files)
    assert "2 files downloaded" in message
    for name in files:
        assert (external / "multi30k" / name).read_bytes() == (multi30k_dir / name).read_bytes()
    assert "already there" in demo_data.ensure_multi30k(external, shared=tmp_path / "nowhere", base_url="http://0.0.0.0:1")


def test_multi30k_sha256_mismatch_is_one_line_and_installs_nothing(multi30k_dir, http_raw, tmp_path):
    folder, base = http_raw
    files = serve_two(multi30k_dir, folder)
    (folder / "raw" / "val.fr.gz").write_bytes(gzip.compress(b"tampered\n"))
    digest = hashlib.sha256((folder / "raw" / "val.fr.gz").read_bytes()).hexdigest()
    with pytest.raises(DataError) as caught:
        demo_data.install_multi30k(tmp_path / "external", base_url=base, files=files)
    message = str(caught.value)
    assert message == f"{base}/val.fr.gz: sha256 {digest} does not match the pinned {files['val.fr.gz']}"
    assert not (tmp_path / "external" / "multi30k").exists()
    assert not [p for p in (tmp_path / "external").iterdir()]  # no temp folder left either


def test_multi30k_is_linked_from_shared_data(tmp_path):
    shared = tmp_path / "shared" / "data"
    (shared / "multi30k").mkdir(parents=True)
    external = tmp_path / "repo" / "data" / "external"
    external.mkdir(parents=True)
    assert "linked" in demo_data.ensure_multi30k(external, shared=shared)
    assert os.readlink(external / "multi30k") == "../../../shared/data/multi30k"


def test_a_broken_gz_file_is_named(tmp_path, ingest):
    folder = write_split_dir(tmp_path / "src")
    (folder / "val.de").rename(folder / "val.de.gz")  # plain text under a .gz name
    with pytest.raises(DataError, match=rf"^data.source.path: {folder / 'val.de.gz'}: cannot read: Not a gzipped file"):
        ingest(text_section(folder))


def test_tabular_directory_with_predefined_splits(tmp_path, ingest, workspace):
    folder = tmp_path / "tsv"
    folder.mkdir()
    for name, n in (("train", 6), ("dev", 2), ("test", 3)):
        rows = "".join(f"{name} {i}\t{name} fr {i}\n" for i in range(n))
        (folder / f"{name}.tsv").write_text("src\ttgt\n" + rows, encoding="utf-8")
    columns = {"source": "src", "target": "tgt"}
    report = ingest(section(folder, ("en", "de"), splits={"val": "dev"}, columns=columns, max_rows=4))["source"]
    assert {s: report["splits"][s]["rows"] for s in SPLITS} == {"train": 4, "val": 2, "test": 3}
    assert prepared(workspace)["val"][1]["src"] == "dev 1"


def test_a_url_source_is_fetched_and_checked(http_raw, ingest, workspace):
    folder, base = http_raw
    (folder / "raw").mkdir()
    lines = "".join(f"{i}\tsee {i}\tsehen {i}\n" for i in range(20))
    (folder / "raw" / "pairs.tsv").write_text("id\ten\tde\n" + lines, encoding="utf-8")
    digest = hashlib.sha256((folder / "raw" / "pairs.tsv").read_bytes()).hexdigest()
    report = ingest(section(f"{base}/pairs.tsv", sha256=digest))["source"]
    assert report["kept"] == 20 and report["input"]["sha256"] == digest
    with pytest.raises(DataError, match=f"data.source.sha256: {base}/pairs.tsv: downloaded content has sha256 {digest}"):
        ingest(section(f"{base}/pairs.tsv", sha256="0" * 64))
