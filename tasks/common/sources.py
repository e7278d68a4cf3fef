"""Reading one data section (`data.source` or `data.target`), whatever the kind of task.

A reader takes the section's name and spec and the columns the kind wants, keyed by role
(`{"text": "review", "label": "stars"}` for classification, `{"source": "en", "target": "de"}`
for translation), and yields `Record`s: the values by role, with the file and row they came
from. A row that is already known to be bad while reading (undecodable bytes, a malformed CSV
record, a wrong field count, bad JSON) carries its `Bad` and is quarantined by the kind, never
dropped. The kinds label, clean and split the records themselves.

Inputs: a csv / tsv (.txt) / jsonl / parquet file or a directory of them, an http(s) URL
pinned by sha256 (downloaded once into a content-addressed cache), or (format "hf") a datasets
hub id, a directory saved with `save_to_disk`, or a directory of data files that
`datasets.load_dataset` reads.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import json
import math
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional
from collections.abc import Iterable, Iterator, Mapping

from tasks.common.errors import DataError, ParamsError
from tasks.common.io import sha256_file
from tasks.params import SourceSpec

# .txt counts as tsv: the VADER ground-truth files are tab-separated .txt files.
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
ID_COLUMN = "id"  # used as the row id when the input has it; otherwise the row number
# What the readers themselves can find wrong with a row; each kind adds its own reasons.
READ_PROBLEMS = ("undecodable", "malformed_row", "wrong_field_count", "bad_json")

Roles = Mapping[str, str]  # role ("text", "source", ...) -> column name in the input


class Bad(NamedTuple):
    """Why a row is quarantined: `kind` is the report's counter, `reason` the row's message,
    `side` the role it concerns when a row has two (translation: "source" or "target")."""

    kind: str
    reason: str
    side: str = ""


@dataclass
class Record:
    """One row as read: its values by role, and where it came from."""

    file: str  # the file (or URL, or dataset[split]) it came from, as the user wrote it
    row: int  # 1-based: the line number in text formats (header = line 1), else the row index
    id: str
    values: dict[str, Any]
    problem: Optional[Bad] = None  # already known bad while reading (bytes, fields, JSON)
    files: Optional[dict[str, str]] = None  # role -> file, when the roles come from different files


def field_of(name: str) -> str:
    """How errors name a section: its params path."""
    return f"data.{name}"


def unparsed(file: str, row: int, row_id: str, raw: Any, roles: Roles, problem: Bad) -> Record:
    """A row that could not be split into columns: the raw line goes in the first role's slot,
    so the quarantine file shows what was there."""
    first, *others = list(roles)
    return Record(file, row, row_id, {first: raw, **{role: None for role in others}}, problem)


# ---------------------------------------------------------------- locating the input


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def sha256_dir(directory: Path) -> str:
    """One hash for a directory: its files' hashes and relative paths, like a SHA256SUMS file."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and not is_hidden(p, directory))
    lines = "".join(f"{sha256_file(p)}  {p.relative_to(directory).as_posix()}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def resolve_input(name: str, spec: SourceSpec, cache_dir: Path) -> tuple[Path | str, dict]:
    """The local path (or hub id) to read, and the input's identity for the data report."""
    field_name = field_of(name)
    if is_url(spec.path):
        if spec.format == "hf":
            raise ParamsError(f"{field_name}.format: hf reads a hub id or a local directory, not a URL: {spec.path}")
        local = fetch_url(spec.path, spec.sha256, cache_dir / "downloads", field_name)
        return local, {"path": spec.path, "sha256": spec.sha256, "cached_as": local.as_posix()}
    path = Path(spec.path)
    if spec.format == "hf" and not path.exists():
        if spec.sha256:
            raise ParamsError(f"{field_name}.sha256: pins files, directories and URLs; {spec.path} is a hub id")
        return spec.path, {"path": spec.path, "hub_id": True}
    if not path.exists():
        raise DataError(f"{field_name}.path: {spec.path}: no such file or directory")
    digest = sha256_dir(path) if path.is_dir() else sha256_file(path)
    if spec.sha256 and digest != spec.sha256:
        raise DataError(f"{field_name}.sha256: {spec.path} has sha256 {digest}, expected {spec.sha256}")
    return path, {"path": spec.path, "sha256": digest}


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


def require_columns(present: list[str], roles: Roles, shown: str, field_name: str) -> None:
    for role, wanted in roles.items():
        if wanted not in present:
            listed = ", ".join(map(str, present))
            raise DataError(f"{field_name}.columns.{role}: column {wanted!r} not in {shown} (columns: {listed})")


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


def read_delimited(path: Path, shown: str, fmt: str, roles: Roles, field_name: str) -> Iterator[Record]:
    # TSV is read without quoting: the VADER files have fields that start with an unbalanced '"'
    # (e.g. `"  this problem vanished...`), which quote-aware parsing would run into the next rows.
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if fmt == "tsv" else (",", csv.QUOTE_MINIMAL)
    with path.open("rb") as handle:
        bad_lines: set[int] = set()
        reader = csv.reader(decoded_lines(handle, bad_lines), delimiter=delimiter, quoting=quoting)
        header = [name.strip() for name in next(reader, [])]
        if not header:
            raise DataError(f"{field_name}.path: {shown}: empty file (no header row)")
        require_columns(header, roles, shown, field_name)
        for first, last, fields, error in delimited_rows(reader):
            undecodable = not bad_lines.isdisjoint(range(first, last + 1))
            yield delimited_record(shown, first, header, fields, roles, delimiter, error, undecodable)


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


def delimited_record(shown, row, header, fields, roles: Roles, delimiter, error, undecodable) -> Record:
    values = dict(zip(header, fields))
    row_id = record_id(values.get(ID_COLUMN), row)
    record = Record(shown, row, row_id, {role: values.get(column) for role, column in roles.items()})
    if undecodable:
        record.problem = Bad("undecodable", "undecodable bytes (not UTF-8)")
    elif error:
        record.problem = Bad("malformed_row", f"malformed row: {error}")
    elif len(fields) != len(header):
        problem = Bad("wrong_field_count", f"expected {len(header)} fields, got {len(fields)}")
        return unparsed(shown, row, row_id, delimiter.join(fields), roles, problem)
    return record


def read_jsonl(path: Path, shown: str, roles: Roles, field_name: str) -> Iterator[Record]:
    checked = False
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw
            if not raw.strip():
                continue
            obj, problem = parse_json_line(raw)
            if problem:
                yield unparsed(shown, number, str(number), raw.decode("utf-8", "replace").strip(), roles, problem)
                continue
            if not checked:  # the first object stands for the file's columns
                require_columns(list(obj), roles, shown, field_name)
                checked = True
            row_id = record_id(obj.get(ID_COLUMN), number)
            yield Record(shown, number, row_id, {role: obj.get(column) for role, column in roles.items()})


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


def read_parquet(path: Path, shown: str, roles: Roles, field_name: str) -> Iterator[Record]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pyarrow.ArrowException, OSError) as err:
        raise DataError(f"{field_name}.path: {shown}: not a readable parquet file: {err}") from None
    require_columns(table.column_names, roles, shown, field_name)
    yield from table_records(table.to_batches(), shown, roles)


def table_records(batches: Iterable, shown: str, roles: Roles) -> Iterator[Record]:
    """Rows of an Arrow table or HF dataset, given as column batches (dicts or record batches)."""
    number = 0
    for batch in batches:
        batch = batch if isinstance(batch, dict) else batch.to_pydict()
        size = len(next(iter(batch.values()))) if batch else 0
        ids = batch.get(ID_COLUMN) or [None] * size
        for index in range(size):
            number += 1
            values = {role: batch[column][index] for role, column in roles.items()}
            yield Record(shown, number, record_id(ids[index], number), values)


def read_file(path: Path, shown: str, fmt: str, roles: Roles, field_name: str) -> Iterator[Record]:
    fmt = file_format(path, fmt, field_name)
    if fmt in ("csv", "tsv"):
        return read_delimited(path, shown, fmt, roles, field_name)
    if fmt == "jsonl":
        return read_jsonl(path, shown, roles, field_name)
    if fmt == "parquet":
        return read_parquet(path, shown, roles, field_name)
    raise ParamsError(f"{field_name}.format: {fmt!r} reads a hub id or a dataset directory, not the file {shown}")


def data_files(directory: Path, fmt: str) -> list[Path]:
    """The directory's data files (not recursive), in a stable order."""
    wanted = {suffix for suffix, kind in SUFFIX_FORMATS.items() if fmt in ("auto", kind)}
    files = (p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    return sorted(p for p in files if p.suffix.lower() in wanted)


def read_directory(directory: Path, shown: str, fmt: str, roles: Roles, field_name: str) -> Iterator[Record]:
    files = data_files(directory, fmt)
    if not files:
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise DataError(f"{field_name}.path: {shown}: no data files ({known}) in the directory")
    for path in files:
        for record in read_file(path, f"{shown.rstrip('/')}/{path.name}", fmt, roles, field_name):
            record.id = f"{path.name}:{record.id}"  # ids repeat across files (the VADER files do)
            yield record


def read_hf(location: Path | str, spec: SourceSpec, roles: Roles, cache_dir: Path, field_name: str) -> Iterator[Record]:
    for split, dataset in load_hf_splits(location, spec, cache_dir, field_name):
        shown = f"{spec.path}[{split}]"
        require_columns(dataset.column_names, roles, shown, field_name)
        wanted = list(roles.values()) + ([ID_COLUMN] if ID_COLUMN in dataset.column_names else [])
        yield from table_records(dataset.select_columns(wanted).iter(batch_size=1000), shown, roles)


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


def read_records(
    name: str, spec: SourceSpec, location: Path | str, roles: Roles, cache_dir: Path, capped: bool = True
) -> Iterator[Record]:
    """Every record of the section's input (`location` from resolve_input), at most
    `spec.max_rows` of them when `capped`."""
    field_name = field_of(name)
    if spec.format == "hf":
        records = read_hf(location, spec, roles, cache_dir, field_name)
    elif isinstance(location, Path) and location.is_dir():
        records = read_directory(location, spec.path, spec.format, roles, field_name)
    else:
        records = read_file(Path(location), spec.path, spec.format, roles, field_name)
    return itertools.islice(records, spec.max_rows if capped else None)


# ---------------------------------------------------------------- cleaning and quarantine


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def clean_text(value: Any) -> str:
    """Whitespace normalised: runs of spaces, tabs and newlines become one space."""
    return "" if is_missing(value) else " ".join(str(value).split())


def leak_key(text: str) -> str:
    """Texts that count as the same for leakage: case-insensitive (text is already clean)."""
    return text.casefold()


def json_safe(value: Any) -> Any:
    """A raw value as quarantine.jsonl can hold it: NaN, lists, dates and the like become strings."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)
