"""Ingest: read the source and target corpora, label, clean, deduplicate and split them.

Writes `data/prepared/{source,target}/{train,val,test}.jsonl` (rows {"id", "text", "label"}),
`data/prepared/quarantine.jsonl` (every bad row with its reason) and `reports/data.json`, whose
counts add up per domain:

    rows_read == kept + dropped_neutral + quarantined + duplicates + conflicting_duplicates
                 + leakage_removed

Inputs (`data.source` / `data.target`): a csv / tsv (.txt) / jsonl / parquet file or a directory
of them, an http(s) URL pinned by sha256, or (format "hf") a datasets hub id, a directory saved
with `save_to_disk`, or a directory of data files that `datasets.load_dataset` reads.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import math
import os
import random
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Optional

from tasks.common.errors import DataError, ParamsError, user_errors
from tasks.common.io import atomic_dir, sha256_file, write_json_atomic, write_jsonl_atomic
from tasks.common.paths import DOMAINS, SPLITS, Paths
from tasks.params import Columns, LabelRule, Params, SourceSpec, SplitParams, load_params

# .txt counts as tsv: the VADER ground-truth files are tab-separated .txt files.
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
ID_COLUMN = "id"  # used as the row id when the input has it; otherwise the row number
# Every reason a row can be quarantined for: the report lists each (zeros included), so
# `dvc metrics diff` compares like with like.
QUARANTINE_KINDS = (
    "undecodable", "malformed_row", "wrong_field_count", "bad_json",
    "empty_text", "missing_label", "not_a_number", "unknown_label",
)


# ---------------------------------------------------------------- rows and outcomes


class Bad(NamedTuple):
    """Why a row is quarantined: `kind` is the report's counter, `reason` the row's message."""

    kind: str
    reason: str


@dataclass
class Record:
    """One row as read, before labelling."""

    file: str  # the file (or URL, or dataset[split]) it came from, as the user wrote it
    row: int  # 1-based: the line number in text formats (header = line 1), else the row index
    id: str
    text: Any
    raw_label: Any
    problem: Optional[Bad] = None  # already known bad while reading (bytes, fields, JSON)


@dataclass
class Example:
    id: str
    text: str
    label: str
    order: int  # position in the input: outputs keep input order, so they are easy to diff

    def output(self) -> dict:
        return {"id": self.id, "text": self.text, "label": self.label}


@dataclass
class Domain:
    name: str  # "source" or "target"
    spec: SourceSpec
    input: dict = field(default_factory=dict)
    rows_read: int = 0
    examples: list[Example] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # neutral, duplicates, leakage, quarantine kinds
    splits: dict[str, list[Example]] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """How errors name this domain: the params section and the input it points at."""
        return f"data.{self.name} ({self.spec.path})"


# ---------------------------------------------------------------- params consistency


def check_rules(p: Params) -> None:
    """Label-rule mistakes fail before any file is read."""
    labels = p.task.labels
    for name in DOMAINS:
        rule: LabelRule = getattr(p.data, name).label_rule
        field_name = f"data.{name}.label_rule"
        if rule.kind == "threshold" and len(labels) != 2:
            raise ParamsError(
                f"{field_name}.kind: threshold needs exactly 2 task.labels (negative, positive), got {labels}"
            )
        for raw, mapped in rule.mapping.items():
            if mapped not in labels:
                raise ParamsError(f"{field_name}.mapping: {raw!r} maps to {mapped!r}, not one of task.labels {labels}")


# ---------------------------------------------------------------- locating the input


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))




def sha256_dir(directory: Path) -> str:
    """One hash for a directory: its files' hashes and relative paths, like a SHA256SUMS file."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not is_hidden(p, directory))
    lines = "".join(f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def resolve_input(domain: Domain, cache_dir: Path) -> Path | str:
    """The local path (or hub id) to read; records the input's identity in `domain.input`."""
    spec = domain.spec
    field_name = f"data.{domain.name}"
    if is_url(spec.path):
        if spec.format == "hf":
            raise ParamsError(f"{field_name}.format: hf reads a hub id or a local directory, not a URL: {spec.path}")
        local = fetch_url(spec.path, spec.sha256, cache_dir / "downloads", field_name)
        domain.input = {"path": spec.path, "sha256": spec.sha256, "cached_as": local.as_posix()}
        return local
    path = Path(spec.path)
    if spec.format == "hf" and not path.exists():
        if spec.sha256:
            raise ParamsError(f"{field_name}.sha256: pins files, directories and URLs; {spec.path} is a hub id")
        domain.input = {"path": spec.path, "hub_id": True}
        return spec.path
    if not path.exists():
        raise DataError(f"{field_name}.path: {spec.path}: no such file or directory")
    digest = sha256_dir(path) if path.is_dir() else sha256_file(path)
    if spec.sha256 and digest != spec.sha256:
        raise DataError(f"{field_name}.sha256: {spec.path} has sha256 {digest}, expected {spec.sha256}")
    domain.input = {"path": spec.path, "sha256": digest}
    return path


def fetch_url(url: str, sha256: str, cache_dir: Path, field_name: str) -> Path:
    """Download once into a content-addressed cache; the pinned sha256 is checked every time."""
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    final = cache_dir / sha256 / name
    if final.exists() and sha256_file(final) == sha256:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=final.parent)[1])
    try:
        download(url, tmp, name, field_name)
        digest = sha256_file(tmp)
        if digest != sha256:
            raise DataError(f"{field_name}.sha256: {url}: downloaded content has sha256 {digest}, expected {sha256}")
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def download(url: str, dest: Path, name: str, field_name: str) -> None:
    from tqdm import tqdm  # the only slow part of ingest; the bar hides itself when not a terminal

    try:
        with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}", disable=None) as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataError(f"{field_name}.path: {url}: download failed: {err}") from None


# ---------------------------------------------------------------- reading rows


def file_format(path: Path, fmt: str, field_name: str) -> str:
    if fmt != "auto":
        return fmt
    try:
        return SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise DataError(
            f"{field_name}.format: cannot tell the format of {path} from its extension ({known}); set format"
        ) from None


def require_columns(present: list[str], columns: Columns, shown: str, field_name: str) -> None:
    for key in ("text", "label"):
        wanted = getattr(columns, key)
        if wanted not in present:
            listed = ", ".join(map(str, present))
            raise DataError(f"{field_name}.columns.{key}: column {wanted!r} not in {shown} (columns: {listed})")


def record_id(value: Any, row: int) -> str:
    return str(row) if value is None or str(value).strip() == "" else str(value).strip()


def decoded_lines(handle: Iterable[bytes], bad_lines: set[int]) -> Iterator[str]:
    """Each physical line decoded on its own, so one bad byte costs one row, not the file.
    Undecodable lines are yielded with U+FFFD in place and their numbers collected."""
    for number, raw in enumerate(handle, start=1):
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield raw.decode("utf-8", errors="replace")


def read_delimited(path: Path, shown: str, fmt: str, columns: Columns, field_name: str) -> Iterator[Record]:
    # TSV is read without quoting: the VADER files have fields that start with an unbalanced '"'
    # (e.g. `"  this problem vanished...`), which quote-aware parsing would run into the next rows.
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
    with path.open("rb") as handle:
        bad_lines: set[int] = set()
        reader = csv.reader(decoded_lines(handle, bad_lines), delimiter=delimiter, quoting=quoting)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise DataError(f"{field_name}.path: {shown}: empty file (no header row)")
        require_columns(header, columns, shown, field_name)
        for first, last, fields, error in delimited_rows(reader):
            undecodable = not bad_lines.isdisjoint(range(first, last + 1))
            yield delimited_record(shown, first, header, fields, columns, delimiter, error, undecodable)


def delimited_rows(reader) -> Iterator[tuple[int, int, list[str], Optional[str]]]:
    """(first line, last line, fields, csv error) per non-blank record; a record may span lines."""
    first = reader.line_num + 1
    while True:
        try:
            fields, error = next(reader), None
        except StopIteration:
            return
        except csv.Error as err:
            fields, error = [], str(err)
        if fields or error:
            yield first, reader.line_num, fields, error
        first = reader.line_num + 1


def delimited_record(shown, row, header, fields, columns, delimiter, error, undecodable) -> Record:
    values = dict(zip(header, fields))
    row_id = record_id(values.get(ID_COLUMN), row)
    record = Record(shown, row, row_id, values.get(columns.text), values.get(columns.label))
    if undecodable:
        record.problem = Bad("undecodable", "undecodable bytes (not UTF-8)")
    elif error:
        record.problem = Bad("malformed_row", f"malformed row: {error}")
    elif len(fields) != len(header):
        record.text, record.raw_label = delimiter.join(fields), None
        record.problem = Bad("wrong_field_count", f"expected {len(header)} fields, got {len(fields)}")
    return record


def read_jsonl(path: Path, shown: str, columns: Columns, field_name: str) -> Iterator[Record]:
    checked = False
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            if not raw.strip():
                continue
            obj, problem = parse_json_line(raw)
            if problem:
                yield Record(shown, number, str(number), raw.decode("utf-8", "replace").strip(), None, problem)
                continue
            if not checked:  # the first object stands for the file's columns
                require_columns(list(obj), columns, shown, field_name)
                checked = True
            row_id = record_id(obj.get(ID_COLUMN), number)
            yield Record(shown, number, row_id, obj.get(columns.text), obj.get(columns.label))


def parse_json_line(raw: bytes) -> tuple[dict, Optional[Bad]]:
    try:
        obj = json.loads(raw.decode("utf-8").strip())
    except UnicodeDecodeError:
        return {}, Bad("undecodable", "undecodable bytes (not UTF-8)")
    except json.JSONDecodeError as err:
        return {}, Bad("bad_json", f"not valid JSON: {err.msg} (column {err.colno})")
    if not isinstance(obj, dict):
        return {}, Bad("bad_json", f"not a JSON object: {type(obj).__name__}")
    return obj, None


def read_parquet(path: Path, shown: str, columns: Columns, field_name: str) -> Iterator[Record]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError(f"{field_name}.path: {shown}: not a readable parquet file: {err}") from None
    require_columns(table.column_names, columns, shown, field_name)
    yield from table_records(table.to_batches(), shown, columns)


def table_records(batches: Iterable, shown: str, columns: Columns) -> Iterator[Record]:
    """Rows of an Arrow table or HF dataset, given as column batches (dicts or record batches)."""
    number = 0
    for batch in batches:
        batch = batch if isinstance(batch, dict) else batch.to_pydict()
        ids = batch.get(ID_COLUMN) or [None] * len(batch[columns.text])
        for text, label, raw_id in zip(batch[columns.text], batch[columns.label], ids):
            number += 1
            yield Record(shown, number, record_id(raw_id, number), text, label)


def read_file(path: Path, shown: str, fmt: str, columns: Columns, field_name: str) -> Iterator[Record]:
    fmt = file_format(path, fmt, field_name)
    if fmt in ("csv", "tsv"):
        return read_delimited(path, shown, fmt, columns, field_name)
    if fmt == "jsonl":
        return read_jsonl(path, shown, columns, field_name)
    if fmt == "parquet":
        return read_parquet(path, shown, columns, field_name)
    raise ParamsError(f"{field_name}.format: {fmt!r} reads a hub id or a dataset directory, not the file {shown}")


def data_files(directory: Path, fmt: str) -> list[Path]:
    """The directory's data files (not recursive), in a stable order."""
    wanted = {suffix for suffix, kind in SUFFIX_FORMATS.items() if fmt in ("auto", kind)}
    files = (p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if p.suffix.lower() in wanted)


def read_directory(directory: Path, shown: str, fmt: str, columns: Columns, field_name: str) -> Iterator[Record]:
    files = data_files(directory, fmt)
    if not files:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise DataError(f"{field_name}.path: {shown}: no data files ({known}) in the directory")
    for path in files:
        for record in read_file(path, f"{shown.rstrip('/')}/{path.name}", fmt, columns, field_name):
            record.id = f"{path.name}:{record.id}"  # ids repeat across files (the VADER files do)
            yield record


def read_hf(location: Path | str, spec: SourceSpec, cache_dir: Path, field_name: str) -> Iterator[Record]:
    names = [spec.columns.text, spec.columns.label]
    for split, dataset in load_hf_splits(location, spec, cache_dir, field_name):
        shown = f"{spec.path}[{split}]"
        require_columns(dataset.column_names, spec.columns, shown, field_name)
        wanted = names + ([ID_COLUMN] if ID_COLUMN in dataset.column_names else [])
        yield from table_records(dataset.select_columns(wanted).iter(batch_size=1000), shown, spec.columns)


def load_hf_splits(location: Path | str, spec: SourceSpec, cache_dir: Path, field_name: str) -> list[tuple]:
    """[(split name, Dataset)]: the chosen split, or every split in the dataset's own order."""
    import datasets

    markers = ("dataset_dict.json", "state.json")  # what save_to_disk writes
    saved = isinstance(location, Path) and any((location / marker).exists() for marker in markers)
    try:
        if saved:
            loaded = datasets.load_from_disk(str(location))
        else:  # a hub id, or a local directory of data files; the cache stays inside the workspace
            loaded = datasets.load_dataset(str(location), split=spec.hf_split, cache_dir=str(cache_dir / "hf"))
    except (datasets.exceptions.DatasetsError, FileNotFoundError, ConnectionError, ValueError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{field_name}.path: {spec.path}: cannot load HF dataset: {first_line}") from None
    if isinstance(loaded, datasets.Dataset):
        if saved and spec.hf_split is not None:
            raise DataError(f"{field_name}.hf_split: {spec.path} is a dataset without splits; set hf_split: null")
        return [(spec.hf_split or "all", loaded)]
    if spec.hf_split is None:
        return list(loaded.items())
    if spec.hf_split not in loaded:
        splits = ", ".join(loaded)
        raise DataError(f"{field_name}.hf_split: {spec.hf_split!r} not in {spec.path} (splits: {splits})")
    return [(spec.hf_split, loaded[spec.hf_split])]


def read_records(location: Path | str, spec: SourceSpec, cache_dir: Path, field_name: str) -> Iterator[Record]:
    if spec.format == "hf":
        records = read_hf(location, spec, cache_dir, field_name)
    elif isinstance(location, Path) and location.is_dir():
        records = read_directory(location, spec.path, spec.format, spec.columns, field_name)
    else:
        records = read_file(Path(location), spec.path, spec.format, spec.columns, field_name)
    return itertools.islice(records, spec.max_rows)


# ---------------------------------------------------------------- labelling and cleaning


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def raw_key(value: Any) -> str:
    """A raw label as the string the mapping is keyed by (YAML/JSON spelling for booleans)."""
    return str(value).lower() if isinstance(value, bool) else str(value).strip()


def apply_rule(raw: Any, rule: LabelRule, labels: list[str]) -> str | Bad | None:
    """The class name, a Bad to quarantine, or None for a neutral row (dropped and counted)."""
    if is_missing(raw):
        return Bad("missing_label", "missing label")
    if rule.kind == "threshold":
        return by_threshold(raw, rule, labels)
    name = rule.mapping.get(raw_key(raw), raw_key(raw))
    return name if name in labels else Bad("unknown_label", f"unknown label {name!r}")


def by_threshold(raw: Any, rule: LabelRule, labels: list[str]) -> str | Bad | None:
    try:
        score = float(raw)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        return Bad("not_a_number", f"label {raw_key(raw)!r} is not a number (label_rule threshold)")
    # At the threshold itself a score is neither side: neutral even when neutral_band is 0.
    if abs(score - rule.threshold) < rule.neutral_band or score == rule.threshold:
        return None
    return labels[1] if score > rule.threshold else labels[0]


def clean_text(value: Any) -> str:
    """Whitespace normalised: runs of spaces, tabs and newlines become one space."""
    return "" if is_missing(value) else " ".join(str(value).split())


def judge(record: Record, rule: LabelRule, labels: list[str], min_chars: int) -> str | Bad | None:
    if record.problem:
        return record.problem
    text = clean_text(record.text)
    if len(text) < min_chars:
        return Bad("empty_text", f"empty or too short text ({len(text)} chars, min_chars {min_chars})")
    return apply_rule(record.raw_label, rule, labels)


def json_safe(value: Any) -> Any:
    """A raw value as quarantine.jsonl can hold it: NaN, lists, dates and the like become strings."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


def quarantine_row(domain: str, record: Record, bad: Bad) -> dict:
    return {
        "domain": domain,
        "file": record.file,
        "row": record.row,
        "reason": bad.reason,
        "text": json_safe(record.text),
        "raw_label": json_safe(record.raw_label),
    }


def label_records(domain: Domain, records: Iterable[Record], p: Params) -> None:
    rule = domain.spec.label_rule
    for record in records:
        domain.rows_read += 1
        outcome = judge(record, rule, p.task.labels, p.data.min_chars)
        if isinstance(outcome, Bad):
            domain.counts[f"quarantined.{outcome.kind}"] += 1
            domain.quarantined.append(quarantine_row(domain.name, record, outcome))
        elif outcome is None:
            domain.counts["neutral"] += 1
        else:
            domain.examples.append(Example(record.id, clean_text(record.text), outcome, len(domain.examples)))


def deduplicate(domain: Domain) -> None:
    """Keep the first of identical texts; drop every copy of a text that carries two labels."""
    copies: dict[str, list[Example]] = {}
    for example in domain.examples:
        copies.setdefault(example.text, []).append(example)
    kept = []
    for group in copies.values():  # insertion order: the first copy's position
        if len({example.label for example in group}) > 1:
            domain.counts["conflicting_duplicates"] += len(group)
        else:
            kept.append(group[0])
            domain.counts["duplicates"] += len(group) - 1
    domain.examples = kept


def check_usable(domain: Domain) -> None:
    labels = Counter(example.label for example in domain.examples)
    if not labels:
        raise DataError(f"{domain.where}: no usable rows ({describe_losses(domain)})")
    if len(labels) < 2:
        (only, count), = labels.items()
        raise DataError(
            f"{domain.where}: only one class after labelling ({only!r}: {count} rows; {describe_losses(domain)}); "
            "a classifier needs at least two"
        )


def describe_losses(domain: Domain) -> str:
    """E.g. "read 9, quarantined 2 (empty_text 2), neutral 7": where the rows went."""
    quarantined = {kind: domain.counts[f"quarantined.{kind}"] for kind in QUARANTINE_KINDS}
    detail = ", ".join(f"{kind} {n}" for kind, n in quarantined.items() if n)
    total = sum(quarantined.values())
    parts = [f"read {domain.rows_read}", f"quarantined {total} ({detail})" if detail else f"quarantined {total}"]
    dropped = ("neutral", "duplicates", "conflicting_duplicates")
    return ", ".join(parts + [f"{name} {domain.counts[name]}" for name in dropped if domain.counts[name]])


# ---------------------------------------------------------------- splitting and leakage


def split_sizes(n: int, fractions: SplitParams, where: str, label: str) -> tuple[int, int]:
    """(test, val) sizes for one class: at least one each, and at least one left to train on."""
    n_test = max(1, round(n * fractions.test_fraction))
    n_val = max(1, round(n * fractions.val_fraction))
    if n - n_test - n_val < 1:
        raise DataError(
            f"{where}: class {label!r} has {n} usable rows, too few for a stratified train/val/test split (needs 3)"
        )
    return n_test, n_val


def stratified_split(domain: Domain, fractions: SplitParams, seed: int) -> None:
    by_label: dict[str, list[Example]] = {}
    for example in domain.examples:
        by_label.setdefault(example.label, []).append(example)
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        group = list(by_label[label])
        # One generator per class (a string seed hashes stably): a class's split does not move
        # when another class gains or loses rows.
        random.Random(f"{seed}:{domain.name}:{label}").shuffle(group)
        n_test, n_val = split_sizes(len(group), fractions, domain.where, label)
        splits["test"] += group[:n_test]
        splits["val"] += group[n_test : n_test + n_val]
        splits["train"] += group[n_test + n_val :]
    domain.splits = {name: sorted(rows, key=lambda e: e.order) for name, rows in splits.items()}


def leak_key(text: str) -> str:
    return text.casefold()  # text is already whitespace-normalised


def drop_keys(domain: Domain, split: str, keys: set[str], counter: str) -> None:
    before = domain.splits[split]
    domain.splits[split] = [e for e in before if leak_key(e.text) not in keys]
    domain.counts[counter] += len(before) - len(domain.splits[split])


def remove_leaks(domain: Domain) -> None:
    """The test split is frozen: texts (case-insensitively) also in test leave train and val;
    texts also in val leave train, so early stopping is not judged on seen texts."""
    test_keys = {leak_key(e.text) for e in domain.splits["test"]}
    drop_keys(domain, "val", test_keys, "leakage.val_vs_test")
    drop_keys(domain, "train", test_keys, "leakage.train_vs_test")
    drop_keys(domain, "train", {leak_key(e.text) for e in domain.splits["val"]}, "leakage.train_vs_val")


def remove_cross_domain_leaks(source: Domain, target: Domain) -> None:
    """A target test text seen in source training would let transfer look better than it is."""
    drop_keys(source, "train", {leak_key(e.text) for e in target.splits["test"]}, "leakage.source_train_vs_target_test")


def check_splits(domain: Domain) -> None:
    present = {e.label for e in domain.examples}
    for split, rows in domain.splits.items():
        missing = present - {e.label for e in rows}
        if missing:
            raise DataError(
                f"{domain.where}: split {split!r} has no {sorted(missing)} rows after removing leaked texts; "
                "too few rows for a stratified split"
            )


# ---------------------------------------------------------------- report and outputs


def domain_report(domain: Domain, labels: list[str]) -> dict:
    quarantined = {kind: domain.counts[f"quarantined.{kind}"] for kind in QUARANTINE_KINDS}
    leakage = {k.split(".", 1)[1]: n for k, n in sorted(domain.counts.items()) if k.startswith("leakage.")}
    splits = {
        name: {"rows": len(rows), "labels": {label: sum(e.label == label for e in rows) for label in labels}}
        for name, rows in domain.splits.items()
    }
    return {
        "input": {**domain.input, "format": domain.spec.format, "max_rows": domain.spec.max_rows},
        "rows_read": domain.rows_read,
        "kept": sum(len(rows) for rows in domain.splits.values()),
        "dropped_neutral": domain.counts["neutral"],
        "quarantined": {"total": sum(quarantined.values()), "by_reason": quarantined},
        "duplicates": domain.counts["duplicates"],
        "conflicting_duplicates": domain.counts["conflicting_duplicates"],
        "leakage_removed": {"total": sum(leakage.values()), **leakage},
        "splits": splits,
    }


def build_report(domains: list[Domain], p: Params, paths: Paths) -> dict:
    return {
        "labels": list(p.task.labels),
        "seed": p.seed,
        "split": p.data.split.model_dump(),
        "min_chars": p.data.min_chars,
        "quarantine_file": paths.quarantine.relative_to(paths.root).as_posix(),
        **{domain.name: domain_report(domain, p.task.labels) for domain in domains},
    }


def write_outputs(domains: list[Domain], report: dict, paths: Paths) -> None:
    # The whole of data/prepared appears at once, or not at all.
    with atomic_dir(paths.prepared) as tmp:
        for domain in domains:
            for split, rows in domain.splits.items():
                target = tmp / paths.split_file(domain.name, split).relative_to(paths.prepared)
                write_jsonl_atomic(target, (e.output() for e in rows))
        quarantined = [row for domain in domains for row in domain.quarantined]
        write_jsonl_atomic(tmp / paths.quarantine.relative_to(paths.prepared), quarantined)
    write_json_atomic(paths.data_report, report)


# ---------------------------------------------------------------- the stage


def prepare_domain(name: str, p: Params, paths: Paths) -> Domain:
    domain = Domain(name, getattr(p.data, name))
    cache_dir = paths.root / "data" / "cache"
    try:
        location = resolve_input(domain, cache_dir)
        label_records(domain, read_records(location, domain.spec, cache_dir, f"data.{name}"), p)
    except OSError as err:  # unreadable file, permissions, a disk error: the user's to fix
        where = err.filename or domain.spec.path
        raise DataError(f"data.{name}.path: {where}: cannot read: {err.strerror or err}") from None
    deduplicate(domain)
    check_usable(domain)
    stratified_split(domain, p.data.split, p.seed)
    remove_leaks(domain)
    return domain


def run(p: Params, paths: Paths) -> dict:
    """Read, label, clean, split and write both domains; returns the report (reports/data.json)."""
    if p.task.kind == "translation":  # same stage, encoder-decoder work
        from tasks.translation import ingest as translation

        return translation.run(p, paths)
    check_rules(p)
    source, target = (prepare_domain(name, p, paths) for name in DOMAINS)
    remove_cross_domain_leaks(source, target)
    for domain in (source, target):
        check_splits(domain)
    report = build_report([source, target], p, paths)
    write_outputs([source, target], report, paths)
    return report


def summary(report: dict) -> str:
    parts = []
    for name in DOMAINS:
        d = report[name]
        sizes = "/".join(str(d["splits"][s]["rows"]) for s in SPLITS)
        quarantined = d["quarantined"]["total"]
        parts.append(f"{name} {d['kept']} kept of {d['rows_read']} (train/val/test {sizes}, quarantined {quarantined})")
    return "ingest: " + "; ".join(parts)


def main() -> None:
    with user_errors("ingest"):
        params = load_params()
        report = run(params, Paths())
    print(summary(report))


if __name__ == "__main__":
    main()
