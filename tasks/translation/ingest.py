"""Ingest for translation: read both language pairs, clean, deduplicate, split and write them.

Writes `data/prepared/{source,target}/{train,val,test}.jsonl` (rows {"id", "src", "tgt",
"src_lang", "tgt_lang"}, see tasks/translation/__init__.py), `data/prepared/quarantine.jsonl`
(every bad pair with its file, row and reason) and `reports/data.json`, whose counts add up per
domain:

    rows_read == kept + quarantined + duplicates + leakage_removed

and per input file (`files` in the report, checked on every run; a pair of line-aligned text
files is counted under its source-side file): rows_read == kept + quarantined (by reason) +
dropped (by reason). Data that was read but cannot be used (an empty split) still writes the
quarantine file and the report, with the error.

Inputs per domain (`data.source`, `data.target`), by `format`:
- "text": two line-aligned files per split, plain or .gz: `<path>/<name>.<lang>[.gz]` with
  `splits` (path is a directory); without `splits` (then a seeded random split), path is a
  directory holding one pair `<stem>.<lang>[.gz]` (what DVC can hash), or the stem itself
  (`python -m tasks ingest` alone: DVC cannot hash a path that is no file);
- "tsv" / "csv" / "jsonl" / "parquet" (or "auto" by suffix): a file, a directory of them, or an
  http(s) URL pinned by sha256; with `splits`, a directory holding `<name>.<ext>` per split;
  columns `columns.source` / `columns.target`, defaulting to the language codes;
- "hf": a `save_to_disk` directory or a hub id; a `translation` dict column {lang: text} or
  plain columns; `splits` name the HF splits.

With predefined splits `max_rows` caps the train split only: val and test stay whole, so the
frozen test split never changes. Reading and fetching: tasks/common/sources.py.
"""

from __future__ import annotations

import gzip
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Iterator

from tasks.common import decision_set, prepared
from tasks.common.decision_set import DecisionSet
from tasks.common.errors import DataError, ParamsError
from tasks.common.io import sha256_file
from tasks.common.paths import DOMAINS, SPLITS, Paths
from tasks.common.sources import (
    READ_PROBLEMS,
    Bad,
    Record,
    clean_text,
    data_files,
    decoded_lines,
    is_url,
    json_safe,
    leak_key,
    load_hf_splits,
    not_text,
    read_records,
    record_id,
    resolve_input,
    sha256_dir,
)
from tasks.params import Params, SourceSpec, SplitParams
from tasks.translation.alignment import SUSPECT_ALIGNMENT, screen_pairs

# Every reason a pair can be quarantined for; the report lists each, zeros included, so
# `dvc metrics diff` compares like with like. The first four come from the shared readers.
QUARANTINE_KINDS = READ_PROBLEMS + ("not_text", "empty_source", "empty_target", "over_long", SUSPECT_ALIGNMENT)
LEAKAGE_KINDS = ("train_vs_test", "train_vs_val", "source_train_vs_target_test")
TRANSLATION_COLUMN = "translation"  # the HF convention: one dict column {lang: sentence}
ALL = "all"  # the bucket name of rows read before a random split


# ---------------------------------------------------------------- pairs and domains


@dataclass
class Example:
    file: str  # the input file it came from (for the per-file accounts)
    id: str
    src: str
    tgt: str
    src_lang: str
    tgt_lang: str
    order: int  # position in the input: outputs keep input order, so they are easy to diff

    def output(self) -> dict:
        """The prepared row of the contract (tasks/translation/__init__.py)."""
        return {"id": self.id, "src": self.src, "tgt": self.tgt, "src_lang": self.src_lang, "tgt_lang": self.tgt_lang}


@dataclass
class Domain(prepared.Domain):
    """One language pair on its way through the stage."""

    read: dict = field(default_factory=dict)  # bucket -> {"files": [...], "rows": n, ...}
    buckets: dict[str, list[Example]] = field(default_factory=dict)  # split (or ALL) -> kept pairs

    @property
    def src_lang(self) -> str:
        return self.spec.languages.src

    @property
    def tgt_lang(self) -> str:
        return self.spec.languages.tgt


def pair_columns(spec: SourceSpec) -> dict[str, str]:
    """The source and target column names by role: as configured, else the language codes."""
    return {"source": spec.columns.source or spec.languages.src, "target": spec.columns.target or spec.languages.tgt}


# ---------------------------------------------------------------- text format


def text_file(stem: str, lang: str, field_name: str) -> Path:
    """`<stem>.<lang>`, else `<stem>.<lang>.gz`; a clear error naming both when neither exists."""
    plain = Path(f"{stem}.{lang}")
    for candidate in (plain, Path(f"{plain}.gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"{field_name}.path: no {plain} or {plain}.gz (format text reads <path>.<lang>[.gz])")


def text_lines(path: Path, field_name: str) -> tuple[list[str], set[int]]:
    """Every line decoded on its own (one bad byte costs one pair), and the undecodable line numbers."""
    bad: set[int] = set()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            lines = [line.rstrip("\r\n") for line in decoded_lines(handle, bad)]
    except (OSError, EOFError) as err:  # not gzip, truncated, unreadable: name the file
        raise DataError(f"{field_name}.path: {path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    return lines, bad


def read_text_pairs(src_path: Path, tgt_path: Path, id_prefix: str, field_name: str) -> list[Record]:
    """The pairs of two line-aligned files; a different line count is an error (nothing written)."""
    (src_lines, src_bad), (tgt_lines, tgt_bad) = text_lines(src_path, field_name), text_lines(tgt_path, field_name)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"{field_name}.path: {src_path} has {len(src_lines)} lines but {tgt_path} has {len(tgt_lines)}; "
            "format text needs line-aligned files"
        )
    pairs = []
    for number, (src, tgt) in enumerate(zip(src_lines, tgt_lines), start=1):
        files = {"source": str(src_path), "target": str(tgt_path)}
        pair = Record(str(src_path), number, f"{id_prefix}:{number}", {"source": src, "target": tgt}, files=files)
        for side, path, bad in (("source", src_path, src_bad), ("target", tgt_path, tgt_bad)):
            if number in bad and pair.problem is None:
                pair.problem = Bad("undecodable", f"undecodable bytes (not UTF-8) in {path} line {number}", side)
        pairs.append(pair)
    return pairs


def text_inputs(domain: Domain) -> dict[str, tuple[Path, Path, str]]:
    """bucket -> (source file, target file, id prefix)."""
    spec, name = domain.spec, domain.field_name
    if spec.splits is None:
        stem = pair_stem(Path(spec.path), domain) if Path(spec.path).is_dir() else spec.path
        return {ALL: (text_file(stem, domain.src_lang, name), text_file(stem, domain.tgt_lang, name), Path(stem).name)}
    directory = Path(spec.path)
    if not directory.is_dir():
        raise DataError(f"{name}.path: {spec.path}: not a directory (format text with splits reads <path>/<split>.<lang>[.gz])")
    files = {}
    for split in SPLITS:
        stem = (directory / getattr(spec.splits, split)).as_posix()
        files[split] = (text_file(stem, domain.src_lang, name), text_file(stem, domain.tgt_lang, name), Path(stem).name)
    return files


def pair_stem(directory: Path, domain: Domain) -> str:
    """Without splits, `path` may be a directory holding one pair `<stem>.<src>[.gz]` and
    `<stem>.<tgt>[.gz]`: a path DVC can hash (a bare stem is no file, so `dvc repro` cannot)."""
    def stems(lang: str) -> set[str]:
        names = (p.name.removesuffix(".gz") for p in directory.iterdir() if p.is_file())
        return {name.removesuffix(f".{lang}") for name in names if name.endswith(f".{lang}")}

    both = sorted(stems(domain.src_lang) & stems(domain.tgt_lang))
    if len(both) != 1:
        found = ", ".join(both) or "none"
        raise DataError(
            f"{domain.field_name}.path: {directory}: expected one pair <stem>.{domain.src_lang} + <stem>.{domain.tgt_lang} "
            f"(plain or .gz) in the directory, found {found}"
        )
    return (directory / both[0]).as_posix()


def check_text_sha256(domain: Domain, files: list[Path]) -> None:
    """Record each file's hash; a pinned sha256 covers the directory (with splits) or the file pair."""
    domain.input = {"path": domain.spec.path, "files": {str(path): sha256_file(path) for path in files}}
    if not domain.spec.sha256:
        return
    if Path(domain.spec.path).is_dir():
        digest = sha256_dir(Path(domain.spec.path))
    else:  # like a SHA256SUMS file of the two files
        listing = "".join(f"{file_digest}  {Path(path).name}\n" for path, file_digest in sorted(domain.input["files"].items()))
        digest = hashlib.sha256(listing.encode()).hexdigest()
    if digest != domain.spec.sha256:
        raise DataError(f"{domain.field_name}.sha256: {domain.spec.path} has sha256 {digest}, expected {domain.spec.sha256}")


def read_text(domain: Domain) -> dict[str, list[Record]]:
    if is_url(domain.spec.path):
        raise ParamsError(f"{domain.field_name}.format: text reads local files; a URL needs a single-file format (tsv, csv, jsonl, parquet)")
    inputs = text_inputs(domain)
    check_text_sha256(domain, [path for src, tgt, _ in inputs.values() for path in (src, tgt)])
    buckets = {}
    for bucket, (src, tgt, prefix) in inputs.items():
        buckets[bucket] = read_text_pairs(src, tgt, prefix, domain.field_name)
        domain.read[bucket] = {"files": [str(src), str(tgt)], "rows_in_input": len(buckets[bucket])}
    return buckets


# ---------------------------------------------------------------- tabular formats (the shared readers)


def tabular_records(name: str, spec: SourceSpec, location: Path, cache_dir: Path) -> list[Record]:
    # no cap here: max_rows is applied per split by the caller
    return list(read_records(name, spec, location, pair_columns(spec), cache_dir, capped=False))


def split_file(directory: Path, split_name: str, spec: SourceSpec, field_name: str) -> Path:
    """With `splits`, a tabular directory holds one `<name>.<ext>` file per split."""
    matches = [path for path in data_files(directory, spec.format) if path.stem == split_name]
    if len(matches) != 1:
        found = "none" if not matches else ", ".join(path.name for path in matches)
        raise DataError(f"{field_name}.splits: {spec.path}: expected one data file named {split_name}.<ext>, found {found}")
    return matches[0]


def read_tabular(domain: Domain, cache_dir: Path) -> dict[str, list[Record]]:
    spec = domain.spec
    location, domain.input = resolve_input(domain.name, spec, cache_dir)  # fetches and checks URLs, checks sha256
    if spec.splits is None:
        return {ALL: tabular_records(domain.name, spec, location, cache_dir)}
    if not (isinstance(location, Path) and location.is_dir()):
        raise DataError(f"{domain.field_name}.path: {spec.path}: with splits, a directory of <split>.<ext> files is needed")
    buckets = {}
    for split in SPLITS:
        path = split_file(location, getattr(spec.splits, split), spec, domain.field_name)
        file_spec = spec.model_copy(update={"path": path.as_posix()})
        buckets[split] = tabular_records(domain.name, file_spec, path, cache_dir)
    return buckets


# ---------------------------------------------------------------- HF datasets


def hf_pairs(dataset, shown: str, columns: dict[str, str], langs: tuple[str, str], field_name: str) -> Iterator[Record]:
    """Pairs from two plain columns, or else from a `translation` dict column {lang: sentence}."""
    names = dataset.column_names
    if set(columns.values()) <= set(names):
        wanted, keys, side = list(columns.values()), tuple(columns.values()), lambda row, key: row[key]
    elif TRANSLATION_COLUMN in names:
        check_translation_languages(dataset, shown, langs, field_name)
        wanted, keys, side = [TRANSLATION_COLUMN], langs, lambda row, lang: (row[TRANSLATION_COLUMN] or {}).get(lang)
    else:
        role, missing = next((role, c) for role, c in columns.items() if c not in names)
        raise DataError(f"{field_name}.columns.{role}: column {missing!r} not in {shown} (columns: {', '.join(names)})")
    has_ids = "id" in names
    for number, row in enumerate(dataset.select_columns(wanted + (["id"] if has_ids else [])), start=1):
        values = {"source": side(row, keys[0]), "target": side(row, keys[1])}
        yield Record(shown, number, record_id(row.get("id"), number), values)


def check_translation_languages(dataset, shown: str, langs: tuple[str, str], field_name: str) -> None:
    """Both languages must be keys of the `translation` column (checked on the first row)."""
    first = (dataset[0][TRANSLATION_COLUMN] or {}) if len(dataset) else {}
    for lang in langs:
        if first and lang not in first:
            have = ", ".join(sorted(first))
            raise DataError(f"{field_name}.languages: {lang!r} is not in the translation column of {shown} (languages: {have})")


def read_hf_pairs(domain: Domain, cache_dir: Path) -> dict[str, list[Record]]:
    spec = domain.spec
    location, domain.input = resolve_input(domain.name, spec, cache_dir)
    # With `splits` every split is loaded and picked by name below; hf_split is then ignored.
    loaded = load_hf_splits(location, spec.model_copy(update={"hf_split": None}) if spec.splits else spec, cache_dir, domain.field_name)
    columns, langs = pair_columns(spec), (domain.src_lang, domain.tgt_lang)

    def pairs_of(split_name: str, dataset) -> list[Record]:
        return list(hf_pairs(dataset, f"{spec.path}[{split_name}]", columns, langs, domain.field_name))

    if spec.splits is None:
        return {ALL: [pair for name, dataset in loaded for pair in pairs_of(name, dataset)]}
    available = dict(loaded)
    buckets = {}
    for split in SPLITS:
        name = getattr(spec.splits, split)
        if name not in available:
            raise DataError(f"{domain.field_name}.splits.{split}: split {name!r} not in {spec.path} (splits: {', '.join(available)})")
        buckets[split] = pairs_of(name, available[name])
    return buckets


# ---------------------------------------------------------------- reading a domain


def read_pairs(domain: Domain, cache_dir: Path) -> dict[str, list[Record]]:
    """bucket -> pairs as read: our split names with predefined splits, else ALL."""
    if domain.spec.format == "text":
        return read_text(domain)
    if domain.spec.format == "hf":
        return read_hf_pairs(domain, cache_dir)
    return read_tabular(domain, cache_dir)


def apply_cap(domain: Domain, buckets: dict[str, list[Record]]) -> dict[str, list[Record]]:
    """max_rows keeps the first N pairs of what is split at random, or of the train split only."""
    cap = domain.spec.max_rows
    capped = {}
    for bucket, pairs in buckets.items():
        entry = domain.read.setdefault(bucket, {"files": sorted({pair.file for pair in pairs})})
        entry.setdefault("rows_in_input", len(pairs))
        capped[bucket] = pairs[:cap] if cap is not None and bucket in (ALL, "train") else pairs
        entry["rows"] = len(capped[bucket])
    return capped


def judge(pair: Record, min_chars: int, max_words: int) -> tuple[str, str] | Bad:
    """(src, tgt) whitespace-normalised, or the Bad (with its side) that quarantines the pair."""
    if pair.problem:
        return pair.problem if pair.problem.side else pair.problem._replace(side="source")
    for side in ("source", "target"):
        wrong_type = not_text(pair.values[side], side)
        if wrong_type:
            return wrong_type
    sides = {side: clean_text(pair.values[side]) for side in ("source", "target")}
    for side, text in sides.items():
        if len(text) < min_chars:
            return Bad(f"empty_{side}", f"empty or too short {side} ({len(text)} chars, min_chars {min_chars})", side)
    for side, text in sides.items():
        words = len(text.split())
        if words > max_words:
            return Bad("over_long", f"{side} has {words} words, max_words {max_words}", side)
    return sides["source"], sides["target"]


def quarantine_row(domain: Domain, pair: Record, bad: Bad) -> dict:
    """The pair with the file and row to look at: the target's file for a target-side reason."""
    return {
        "domain": domain.name,
        "file": pair.files[bad.side] if pair.files and bad.side else pair.file,
        "row": pair.row,
        "id": pair.id,
        "kind": bad.kind,
        "reason": bad.reason,
        "src": json_safe(pair.values["source"]),
        "tgt": json_safe(pair.values["target"]),
    }


def clean_pairs(domain: Domain, pairs: Iterable[Record], min_chars: int, max_words: int, start: int) -> list[Example]:
    """Quarantine bad pairs, drop duplicates (same pair, or same source: keep the first; compared
    case-insensitively, as leakage is)."""
    kept: list[Example] = []
    seen_pairs: set[tuple[str, str]] = set()
    seen_sources: set[str] = set()
    # alignment (tasks/translation/alignment.py): raises on a shifted stretch, else the suspect pairs
    pairs = list(pairs)
    suspects = screen_pairs(pairs, domain.field_name, "line" if domain.spec.format == "text" else "row")
    for order, pair in enumerate(pairs, start=start):
        domain.read_row(pair.file)
        outcome = judge(pair, min_chars, max_words)
        if not isinstance(outcome, Bad) and order - start in suspects:
            outcome = suspects[order - start]
        if isinstance(outcome, Bad):
            domain.tally(pair.file, f"quarantined.{outcome.kind}")
            domain.quarantined.append(quarantine_row(domain, pair, outcome))
            continue
        src, tgt = outcome
        keys = (leak_key(src), leak_key(tgt))
        if keys in seen_pairs:
            domain.tally(pair.file, "duplicates.same_pair")
        elif keys[0] in seen_sources:
            domain.tally(pair.file, "duplicates.same_source")
        else:
            seen_pairs.add(keys)
            seen_sources.add(keys[0])
            domain.long_records.see(pair)
            kept.append(Example(pair.file, pair.id, src, tgt, domain.src_lang, domain.tgt_lang, order))
    return kept


# ---------------------------------------------------------------- splitting and leakage


def random_split(domain: Domain, kept: list[Example], fractions: SplitParams, seed: int,
                 frozen: DecisionSet | None = None) -> dict[str, list[Example]]:
    """Seeded shuffle, then test and val fractions (at least one pair each, one left to train on).
    With a frozen decision set, test is that set and val/train come from the shuffled pairs
    left once its sentences are taken out: on unchanged data, the first run's splits."""
    n = len(kept)
    n_test, n_val = max(1, round(n * fractions.test_fraction)), max(1, round(n * fractions.val_fraction))
    if n - n_test - n_val < 1:
        raise DataError(f"{domain.where}: {n} usable pairs, too few for a train/val/test split (needs 3; {describe_losses(domain)})")
    shuffled = list(kept)
    random.Random(f"{seed}:{domain.name}").shuffle(shuffled)  # a string seed hashes stably
    if frozen is None:
        test, rest = shuffled[:n_test], shuffled[n_test:]
    else:
        test, rest = frozen_examples(frozen), without_decision_set(domain, shuffled, frozen)
    parts = {"test": test, "val": rest[:n_val], "train": rest[n_val:]}
    return {split: sorted(parts[split], key=lambda pair: pair.order) for split in SPLITS}


def without_decision_set(domain: Domain, pairs: list[Example], frozen: DecisionSet) -> list[Example]:
    keys = {leak_key(row["src"]) for row in frozen.rows}
    return prepared.take_out_decision_set(domain, pairs, lambda pair: leak_key(pair.src), keys)


def frozen_examples(frozen: DecisionSet) -> list[Example]:
    """The decision set's pairs as test examples (their file: the set's own, outside the input
    accounts)."""
    file = f"data/decision_set/{decision_set.ROWS_FILE}"
    return [Example(file, row["id"], row["src"], row["tgt"], row["src_lang"], row["tgt_lang"], index)
            for index, row in enumerate(frozen.rows)]


def predefined_with_frozen(domain: Domain, frozen: DecisionSet) -> int:
    """Predefined splits under a frozen decision set: train and val lose its sentences, test is
    the set, and pairs of the test file that are not in it (a refreshed test file) go to train.
    Returns how many moved."""
    for split in ("train", "val"):
        domain.splits[split] = without_decision_set(domain, domain.splits[split], frozen)
    moved = without_decision_set(domain, domain.splits["test"], frozen)
    domain.splits["train"] = sorted(domain.splits["train"] + moved, key=lambda pair: pair.order)
    domain.splits["test"] = frozen_examples(frozen)
    return len(moved)


def drop_sources(domain: Domain, split: str, keys: set[str], counter: str) -> None:
    kept = []
    for pair in domain.splits[split]:
        if leak_key(pair.src) in keys:
            domain.tally(pair.file, f"leakage.{counter}")
        else:
            kept.append(pair)
    domain.splits[split] = kept


def source_keys(pairs: Iterable[Example]) -> set[str]:
    return {leak_key(pair.src) for pair in pairs}


def remove_leaks(domain: Domain) -> None:
    """Val and test stay whole (the test split is frozen): a train pair whose source sentence is
    in test or val leaves train, so neither early stopping nor the score sees trained sentences."""
    drop_sources(domain, "train", source_keys(domain.splits["test"]), "train_vs_test")
    drop_sources(domain, "train", source_keys(domain.splits["val"]), "train_vs_val")


def remove_cross_domain_leaks(source: Domain, target: Domain) -> None:
    """A target test sentence seen in source training would let transfer look better than it is:
    it leaves the source train split; the target test split stays as it is (counted there)."""
    test_keys = source_keys(target.splits["test"])
    target.counts["test_sources_in_source_train"] = len(test_keys & source_keys(source.splits["train"]))
    drop_sources(source, "train", test_keys, "source_train_vs_target_test")


def describe_losses(domain: Domain) -> str:
    """E.g. "read 9, quarantined 2 (empty_source 2), duplicates 1": where the pairs went."""
    quarantined = {kind: domain.counts[f"quarantined.{kind}"] for kind in QUARANTINE_KINDS}
    detail = ", ".join(f"{kind} {n}" for kind, n in quarantined.items() if n)
    duplicates = domain.counts["duplicates.same_pair"] + domain.counts["duplicates.same_source"]
    parts = [f"read {domain.rows_read}", f"quarantined {sum(quarantined.values())}" + (f" ({detail})" if detail else "")]
    leaked = sum(domain.counts[f"leakage.{kind}"] for kind in LEAKAGE_KINDS)
    return ", ".join(parts + [f"duplicates {duplicates}"] + ([f"leakage removed {leaked}"] if leaked else []))


def check_splits(domain: Domain) -> None:
    """Every split is needed (pretrain/fine-tune, early stopping, scoring): none may be empty."""
    for split in SPLITS:
        if not domain.splits[split]:
            raise DataError(f"{domain.where}: split {split!r} has no usable pairs ({describe_losses(domain)})")


# ---------------------------------------------------------------- the stage


def read_domain(domain: Domain, p: Params, paths: Paths) -> None:
    """Read and clean every pair; an input that cannot be read (or is misaligned) stops here."""
    try:
        buckets = apply_cap(domain, read_pairs(domain, paths.root / "data" / "cache"))
    except (OSError, EOFError) as err:  # unreadable, truncated or not-gzip files: the user's to fix
        where = getattr(err, "filename", None) or domain.spec.path
        raise DataError(f"{domain.field_name}.path: {where}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    start = 0
    for bucket, pairs in buckets.items():
        domain.buckets[bucket] = clean_pairs(domain, pairs, p.data.min_chars, p.data.max_words, start)
        start += len(pairs)


def split_domain(domain: Domain, p: Params, frozen: DecisionSet | None) -> None:
    moved = 0
    if ALL in domain.buckets:
        if not domain.buckets[ALL]:
            raise DataError(f"{domain.where}: no usable pairs ({describe_losses(domain)})")
        domain.splits = random_split(domain, domain.buckets[ALL], p.data.split, p.seed, frozen)
    else:
        domain.splits = {split: list(domain.buckets[split]) for split in SPLITS}
        if frozen is not None:
            moved = predefined_with_frozen(domain, frozen)
    if frozen is not None:
        domain.decision = frozen.report(in_data=domain.counts[prepared.IN_DECISION_SET], moved_to_train=moved)
    remove_leaks(domain)


def domain_report(domain: Domain) -> dict:
    """The domain's counts; before the split (a fatal error) its usable pairs count as kept."""
    kept_rows = [pair for rows in (domain.splits or domain.buckets).values() for pair in rows]
    quarantined = {kind: domain.counts[f"quarantined.{kind}"] for kind in QUARANTINE_KINDS}
    duplicates = {kind: domain.counts[f"duplicates.{kind}"] for kind in ("same_pair", "same_source")}
    leakage = {kind: domain.counts[f"leakage.{kind}"] for kind in LEAKAGE_KINDS}
    spec = domain.spec
    report = {
        "languages": {"src": domain.src_lang, "tgt": domain.tgt_lang},
        "input": {
            **domain.input, "format": spec.format, "max_rows": spec.max_rows,
            "splits": spec.splits.model_dump() if spec.splits else None,
        },
        "read": domain.read,
        "rows_read": domain.rows_read,
        "kept": len(kept_rows),
        "quarantined": {"total": sum(quarantined.values()), "by_reason": quarantined},
        "duplicates": {"total": sum(duplicates.values()), **duplicates},
        "leakage_removed": {"total": sum(leakage.values()), **leakage},
        **({"decision_set": domain.decision} if domain.decision else {}),
        "splits": {split: {"rows": len(domain.splits.get(split, []))} for split in SPLITS},
        "files": prepared.file_accounts(domain, kept_rows),
        "long_records": domain.long_records.report(),
    }
    if domain.name == "target":  # counted only: the frozen test split is never changed
        report["test_sources_in_source_train"] = domain.counts["test_sources_in_source_train"]
    return report


def build_report(domains: list[Domain], p: Params, paths: Paths) -> dict:
    return {
        "task": "translation",
        "seed": p.seed,
        "split": p.data.split.model_dump(),
        "min_chars": p.data.min_chars,
        "max_words": p.data.max_words,
        "quarantine_file": paths.quarantine.relative_to(paths.root).as_posix(),
        **{domain.name: domain_report(domain) for domain in domains},
    }


def run(p: Params, paths: Paths) -> dict:
    """Read, clean, split and write both language pairs; returns the report (reports/data.json).
    An input that cannot be read stops before anything is written; pairs that were read but
    leave a split empty still write the quarantine file and the report."""
    languages = p.data.target.languages
    frozen = decision_set.read_back(p, paths, [("src_lang", {languages.src}, "data.target.languages.src"),
                                               ("tgt_lang", {languages.tgt}, "data.target.languages.tgt")])
    domains = [Domain(name, getattr(p.data, name)) for name in DOMAINS]
    return prepared.ingest(
        domains,
        read=lambda domain: read_domain(domain, p, paths),
        split=lambda domain: split_domain(domain, p, frozen if domain.name == "target" else None),
        finish=lambda done: finish(done, p, paths, frozen),
        build_report=lambda done: build_report(done, p, paths),
        paths=paths,
    )


def finish(domains: list[Domain], p: Params, paths: Paths, frozen: DecisionSet | None) -> None:
    source, target = domains
    remove_cross_domain_leaks(source, target)
    for domain in domains:
        check_splits(domain)
    if frozen is None:  # the first run (or freeze_test off): the test split it drew is the set
        rows = [pair.output() for pair in target.splits["test"]]
        target.decision = decision_set.freeze(p, paths, rows, {"languages": {"src": target.src_lang, "tgt": target.tgt_lang}})
