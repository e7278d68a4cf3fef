"""Line alignment of parallel text (tasks/translation/alignment.py, issue 10 item 7): the real
Multi30k passes, a shifted stretch stops ingest naming the file and line, a garbage pair is
quarantined as suspect_alignment; the shift detector on synthetic pairs."""

from __future__ import annotations

import gzip
import itertools
import math
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.common.errors import DataError
from tasks.common.io import read_jsonl
from tasks.common.paths import Paths
from tasks.common.sources import Record
from tasks.params import parse_params
from tasks.translation import alignment
from tasks.translation.alignment import SUSPECT_ALIGNMENT, screen_pairs, screen_texts
from tasks.translation.ingest import QUARANTINE_KINDS, run
from tests.conftest import REPO

LANGS = ("en", "de", "fr", "cs")


# ---------------------------------------------------------------- helpers


def read_gz(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def write_gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(f"{line}\n" for line in lines).encode("utf-8")))
    return path


def as_pairs(src: list[str], tgt: list[str]) -> list[tuple[str, str] | None]:
    """What alignment compares: both sides whitespace-normalised, None where one is empty."""
    cleaned = ((" ".join(s.split()), " ".join(t.split())) for s, t in zip(src, tgt, strict=True))
    return [(s, t) if s and t else None for s, t in cleaned]


def text_data(stem: Path, langs: tuple[str, str]) -> dict:
    """A data section of format text without splits: `<stem>.<lang>[.gz]`, seeded random split."""
    return {"path": str(stem), "format": "text", "languages": {"src": langs[0], "tgt": langs[1]}}


def translation_params(source: dict, target: dict) -> dict:
    return {"task": {"kind": "translation"}, "evaluate": {"baselines": ["target_only"]}, "data": {"source": source, "target": target}}


@pytest.fixture(scope="module")
def multi30k(multi30k_dir: Path) -> dict[tuple[str, str], list[str]]:
    """(split, lang) -> lines of the real val and test_2016_flickr files."""
    return {(split, lang): read_gz(multi30k_dir / f"{split}.{lang}.gz") for split in ("val", "test_2016_flickr") for lang in LANGS}


# ---------------------------------------------------------------- real data: no false alarms


def test_real_val_and_test_pairs_pass_with_nothing_suspect(multi30k):
    for split, (a, b) in itertools.product(("val", "test_2016_flickr"), itertools.combinations(LANGS, 2)):
        screen = screen_texts(as_pairs(multi30k[split, a], multi30k[split, b]))
        assert screen.checked == len(multi30k[split, a]) and screen.shift is None, (split, a, b)
        assert not screen.suspects, (split, a, b, screen.suspects)


def test_real_train_flags_only_the_two_at_at_lines_of_german(multi30k_dir):
    """29,000 real pairs per language pair: the only suspects are train.de lines 16510 and 16664,
    which hold `@@` instead of a caption; no shift anywhere."""
    train = {lang: read_gz(multi30k_dir / f"train.{lang}.gz") for lang in LANGS}
    assert [train["de"][line - 1] for line in (16510, 16664)] == ["@@", "@@"]
    for a, b in itertools.combinations(LANGS, 2):
        screen = screen_texts(as_pairs(train[a], train[b]))
        assert screen.shift is None and screen.checked == 29000, (a, b)
        flagged = sorted(i + 1 for i in screen.suspects)
        assert flagged == ([16510, 16664] if "de" in (a, b) else []), (a, b, flagged)


def test_real_pairs_keep_everything_through_ingest(multi30k_dir, tmp_path):
    source, target = text_data(multi30k_dir / "val", ("en", "cs")), text_data(multi30k_dir / "test_2016_flickr", ("de", "fr"))
    params = parse_params(translation_params(source, target))
    report = run(params, Paths(root=tmp_path / "ws"))
    for name in ("source", "target"):
        assert report[name]["quarantined"]["by_reason"][SUSPECT_ALIGNMENT] == 0
        assert report[name]["quarantined"]["total"] == 0
    assert SUSPECT_ALIGNMENT in QUARANTINE_KINDS


# ---------------------------------------------------------------- the case: a shifted stretch stops ingest


def test_blank_line_inserted_and_line_deleted_later_stops_ingest_at_that_line(multi30k, multi30k_dir, tmp_path):
    """The issue's case: a blank line inserted at de line 200 and de line 350 deleted: equal line
    counts, 150 pairs shifted. `python -m tasks ingest` stops with one line naming the files and
    line 200, and writes nothing."""
    de = list(multi30k["test_2016_flickr", "de"])
    de.insert(199, "")
    del de[349]
    assert len(de) == 1000
    write_gz(tmp_path / "in" / "flickr.en.gz", multi30k["test_2016_flickr", "en"])
    write_gz(tmp_path / "in" / "flickr.de.gz", de)
    params = translation_params(text_data(multi30k_dir / "val", ("en", "fr")), text_data(Path("in") / "flickr", ("en", "de")))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {**os.environ, "PIPELINE_PARAMS": str(tmp_path / "params.yaml"), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "tasks", "ingest"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ingest: data.target.path: in/flickr.en.gz and in/flickr.de.gz: "), lines[0]
    assert "lines look misaligned from line 200 " in lines[0], lines[0]
    assert "line i of in/flickr.en.gz fits line i+1 of in/flickr.de.gz" in lines[0]
    assert lines[0].endswith("check for a missing or extra line near line 200")
    assert not (tmp_path / "data" / "prepared").exists() and not (tmp_path / "reports").exists()


def test_detection_fires_within_a_few_dozen_lines_of_the_break(multi30k):
    en, de = multi30k["test_2016_flickr", "en"], list(multi30k["test_2016_flickr", "de"])
    de.insert(199, "")
    del de[349]
    shift = screen_texts(as_pairs(en, de)).shift
    assert shift is not None and (shift.start, shift.offset) == (199, 1)  # 0-based: line 200
    assert 199 < shift.detected_at < 199 + 30


# ---------------------------------------------------------------- single garbage pairs are quarantined


def test_a_garbage_pair_is_quarantined_as_suspect_alignment_and_the_rest_kept(multi30k, multi30k_dir, tmp_path):
    en, de = multi30k["val", "en"], list(multi30k["val", "de"])
    de[99] = "Dies ist ein sehr langer Satz, der nichts mit dem englischen zu tun hat. " * 6  # ~440 characters
    de[299] = "4711 0815 1234 5678 9999 42 = 17 + 25 / 3.1415 # 2718"  # about the right length, no letters
    write_gz(tmp_path / "in" / "val.en.gz", en)
    write_gz(tmp_path / "in" / "val.de.gz", de)
    workspace = Paths(root=tmp_path / "ws")
    source, target = text_data(tmp_path / "in" / "val", ("en", "de")), text_data(multi30k_dir / "test_2016_flickr", ("en", "fr"))
    report = run(parse_params(translation_params(source, target)), workspace)
    counts = report["source"]
    assert counts["quarantined"]["by_reason"][SUSPECT_ALIGNMENT] == 2 == counts["quarantined"]["total"]
    accounted = counts["kept"] + counts["quarantined"]["total"] + counts["duplicates"]["total"] + counts["leakage_removed"]["total"]
    assert accounted == counts["rows_read"] == 1014
    rows = {row["row"]: row for row in read_jsonl(workspace.quarantine) if row["domain"] == "source"}
    assert set(rows) == {100, 300}
    assert {row["kind"] for row in rows.values()} == {SUSPECT_ALIGNMENT}
    assert rows[100]["file"] == str(tmp_path / "in" / "val.en.gz") and rows[100]["tgt"] == de[99]
    assert rows[100]["reason"].startswith("length ratio target/source ")
    assert rows[300]["reason"].startswith("letters are ") and "0% of the target" in rows[300]["reason"]


# ---------------------------------------------------------------- the detector on synthetic pairs

WORDS = "the a dog cat runs in on park man woman red blue street water child plays ball under near big".split()


def sentence(rng: random.Random, chars: float) -> str:
    words: list[str] = []
    while len(" ".join(words)) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def synthetic(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Pairs of random words, 20-120 characters; the target ~15 % longer, log-normal noise of 0.15
    (as between English and German captions)."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        src = sentence(rng, rng.randint(20, 120))
        pairs.append((src, sentence(rng, len(src) * math.exp(rng.gauss(0.15, 0.15)))))
    return pairs


def shifted(pairs: list[tuple[str, str]], start: int, end: int, offset: int) -> list[tuple[str, str] | None]:
    """Pairs start..end-1 (0-based) shifted: the target that belongs to source line i is at line
    i + offset (offset 1: a line inserted on the target side before `start`)."""
    return [(src, pairs[i - offset][1]) if start <= i < end else (src, tgt) for i, (src, tgt) in enumerate(pairs)]


def test_aligned_synthetic_pairs_raise_nothing():
    screen = screen_texts(synthetic(2000))
    assert screen.checked == 2000 and screen.shift is None and not screen.suspects


@pytest.mark.parametrize("offset", [1, -1, 2, -2])
def test_a_shifted_stretch_is_found_with_its_offset_and_start(offset):
    shift = screen_texts(shifted(synthetic(1000, seed=offset), 400, 520, offset)).shift
    assert shift is not None and shift.offset == offset
    assert abs(shift.start - 400) <= 3 and shift.detected_at < 400 + 30


def test_a_shift_that_runs_to_the_end_of_the_file_is_found():
    """Most of the file shifted: the scale is the spread of each pair's best fit, so the
    misaligned majority does not hide the shift in its own noise."""
    pairs = synthetic(600, seed=3)
    shift = screen_texts(shifted(pairs, 100, 599, 1)).shift
    assert shift is not None and shift.offset == 1 and abs(shift.start - 100) <= 3


def test_the_start_moves_back_over_the_blank_line_that_caused_it():
    gain = [-1.5] * 19 + [0.0, 0.0] + [2.0] * 11  # pair 20 blank, and so pair 19's neighbour: no gain
    aligned: list[float | None] = [1.0] * 32
    aligned[20] = None
    assert alignment.change_point(gain, aligned, end=32) == (22.0, 20)
    pairs: list[tuple[str, str] | None] = list(shifted(synthetic(800, seed=5), 301, 500, 1))
    pairs[300] = None  # a blank target line inserted there (nothing to compare)
    shift = screen_texts(pairs).shift
    assert shift is not None and shift.offset == 1 and abs(shift.start - 300) <= 3


def test_same_lengths_everywhere_and_sorted_files_raise_nothing():
    same = [(f"sentence number {i:04d}", f"Satz Nummer {i:04d}") for i in range(300)]  # MAD 0: the scale floor
    assert screen_texts(same).shift is None and not screen_texts(same).suspects
    by_length = sorted(synthetic(1500, seed=7), key=lambda pair: len(pair[0]))  # neighbours fit almost as well
    assert screen_texts(by_length).shift is None


def test_too_few_pairs_are_not_judged():
    pairs = synthetic(alignment.MIN_PAIRS - 1)
    pairs[3] = (pairs[3][0], "x" * 500)
    assert screen_texts(pairs).checked == 0 and not screen_texts(pairs).suspects


def records(pairs: list[tuple[str, str]], file: str, first_row: int = 1) -> list[Record]:
    return [Record(file, row, str(row), {"source": src, "target": tgt}) for row, (src, tgt) in enumerate(pairs, start=first_row)]


def test_more_than_two_percent_suspect_pairs_stop_with_the_first_row():
    pairs = synthetic(200, seed=11)
    for i in (50, 80, 120, 150, 190):  # 5 of 200: 2.5 %
        pairs[i] = (pairs[i][0], "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 8)
    with pytest.raises(DataError) as caught:
        screen_pairs(records(pairs, "pairs.tsv", first_row=2), "data.source", unit="row")
    message = str(caught.value)
    assert message.startswith("data.source.path: pairs.tsv: 5 of 200 pairs (2.5%, more than 2%) ")
    assert "the first at row 52" in message and "\n" not in message
    # 4 suspects are quarantined, not a stop (below MIN_SUSPECTS_TO_STOP)
    pairs[190] = synthetic(1, seed=12)[0]
    suspects = screen_pairs(records(pairs, "pairs.tsv"), "data.source", unit="row")
    assert sorted(suspects) == [50, 80, 120, 150] and {bad.kind for bad in suspects.values()} == {SUSPECT_ALIGNMENT}


def test_a_shifted_tabular_file_names_the_file_and_row_and_each_file_is_checked_on_its_own():
    good, bad = synthetic(300, seed=13), shifted(synthetic(300, seed=14), 100, 299, 1)
    rows = records(good, "a.tsv") + records(bad, "b.tsv")  # b.tsv rows 101-299 shifted
    with pytest.raises(DataError) as caught:
        screen_pairs(rows, "data.target", unit="row")
    expected = r"data.target.path: b.tsv: rows look misaligned from row (\d+) \(.*row i of the source fits row i\+1 of the target.*"
    found = re.fullmatch(expected, str(caught.value))
    assert found and abs(int(found.group(1)) - 101) <= 3, str(caught.value)
    assert screen_pairs(records(good, "a.tsv") + records(synthetic(300, seed=15), "b.tsv"), "data.target") == {}
