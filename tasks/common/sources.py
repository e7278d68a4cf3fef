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
import statistics
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Optional

from serving.package import clean_text as serving_clean_text
from tasks.common.errors import DataError, ParamsError
from tasks.common.io import sha256_file
from tasks.params import SourceSpec

# .txt counts as tsv: the VADER ground-truth files are tab-separated .txt files.
SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
ID_COLUMN = "id"  # used as the row id when the input has it; otherwise the row number
# What the readers themselves can find wrong with a row; each kind adds its own reasons.
READ_PROBLEMS = ("undecodable", "malformed_row", "unbalanced_quote", "wrong_field_count", "bad_json")


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
    lines: int = 1  # physical lines it spans (a quoted CSV field may hold newlines)


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


def require_columns(present: list[str], roles: Roles, shown: str, field_name: str, hint: str = "") -> None:
    for role, wanted in roles.items():
        if wanted not in present:
            listed = ", ".join(map(str, present))
            raise DataError(f"{field_name}.columns.{role}: column {wanted!r} not in {shown} (columns: {listed}){hint}")
        if present.count(wanted) > 1:  # which one the user meant cannot be guessed
            raise DataError(f"{field_name}.columns.{role}: column {wanted!r} appears {present.count(wanted)} times in {shown}")


def record_id(value: Any, row: int) -> str:
    return str(row) if value is None or str(value).strip() == "" else str(value).strip()


def raw_lines(handle: BinaryIO) -> Iterator[bytes]:
    """The physical lines of a file, BOM removed. Lines end at LF or CRLF; a file with CRs but
    no LF in its first 64 KiB (classic Mac) ends them at CR."""
    head = handle.read(1 << 16)
    handle.seek(0)
    lines = handle.read().splitlines(keepends=True) if b"\r" in head and b"\n" not in head else handle
    for number, raw in enumerate(lines, start=1):
        yield raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw


def decoded_lines(handle: BinaryIO, bad_lines: set[int]) -> Iterator[str]:
    """Each physical line decoded on its own, so one bad byte costs one row, not the file.
    Undecodable lines are yielded with U+FFFD in place and their numbers collected."""
    for number, raw in enumerate(raw_lines(handle), start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines.add(number)
            yield raw.decode("utf-8", errors="replace")


class PhysicalLines:
    """Numbered lines for csv.reader that remember the lines of the record being parsed, so a
    runaway quoted field can be undone: its lines are pushed back and read again as rows."""

    def __init__(self, lines: Iterator[str]):
        self._lines = enumerate(lines, start=1)
        self._pushed: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self) -> PhysicalLines:
        return self

    def __next__(self) -> str:
        item = self._pushed.popleft() if self._pushed else next(self._lines)
        self.taken.append(item)
        return item[1]

    def next_record(self) -> None:
        self.taken = []

    def push_back(self, items: list[tuple[int, str]]) -> None:
        self._pushed.extendleft(reversed(items))


@dataclass
class RawRow:
    first: int  # physical line numbers
    last: int
    fields: list[str]
    problem: Optional[Bad] = None


def parse_record(lines: PhysicalLines, dialect: dict) -> tuple[Optional[list[str]], Optional[str]]:
    """The next record's fields (None at the end) and the strict parser's complaint, if any."""
    lines.next_record()
    try:
        return next(csv.reader(lines, strict=True, **dialect), None), None
    except csv.Error as err:
        return [], str(err)


def parse_line(line: str, dialect: dict) -> tuple[list[str], Optional[str]]:
    """One line parsed leniently, as a spreadsheet would: `1,"good" stuff,x` reads `good stuff`."""
    try:
        return next(csv.reader([line], **dialect), []), None
    except csv.Error as err:
        return [], str(err)


def looks_like_rows(lines: list[tuple[int, str]], dialect: dict, width: int) -> bool:
    """Whether the continuation lines of a multi-line quoted field are really rows of their own
    (most of them parse alone into exactly the header's number of fields)."""
    complete = sum(len(parse_line(text, dialect)[0]) == width for _, text in lines if text.strip())
    return complete >= 2 and complete * 2 >= len(lines)


# Python's csv messages, as a user who never opened the csv module would say them.
CSV_ERRORS = {
    "new-line character seen in unquoted field": "a carriage return (CR) inside a field that is not quoted",
    "unexpected end of data": "the file ends inside the quoted field",
    "',' expected after '\"'": "a closing quote followed by more text instead of a comma",
}


def csv_problem(error: str) -> str:
    return next((plain for raw, plain in CSV_ERRORS.items() if error.startswith(raw)), error)


def runaway(taken: list[tuple[int, str]], error: Optional[str]) -> Bad:
    first, last = taken[0][0], taken[-1][0]
    how = csv_problem(error) if error else "the lines inside it read as rows of their own"
    return Bad(
        "unbalanced_quote",
        f"a quoted field opens on line {first} and runs to line {last} ({how}); only line {first} is quarantined, "
        "the lines after it are read as rows",
    )


def delimited_rows(lines: PhysicalLines, dialect: dict, width: int) -> Iterator[RawRow]:
    """Every non-blank record. A quoted field that runs over several lines and then breaks the
    CSV rules (or swallows lines that look like rows) is a stray quote, not a multi-line text:
    its opening line alone is quarantined, and every line after it is read again."""
    while True:
        fields, error = parse_record(lines, dialect)
        taken = lines.taken
        if not taken:
            return
        if len(taken) > 1 and (error or looks_like_rows(taken[1:], dialect, width)):
            lines.push_back(taken[1:])
            yield RawRow(taken[0][0], taken[0][0], [taken[0][1].rstrip("\r\n")], runaway(taken, error))
            continue
        if error:  # one line breaking the strict rules: read it as a spreadsheet would
            fields, error = parse_line(taken[0][1], dialect)
        if fields or error:
            problem = Bad("malformed_row", f"malformed row: {csv_problem(error)}") if error else None
            yield RawRow(taken[0][0], taken[-1][0], fields or [taken[0][1].rstrip("\r\n")], problem)


def read_header(lines: PhysicalLines, dialect: dict, shown: str, field_name: str) -> list[str]:
    fields, error = parse_record(lines, dialect)
    if error:
        raise DataError(f"{field_name}.path: {shown}: line 1 (the header) cannot be read: {csv_problem(error)}")
    if not fields:
        raise DataError(f"{field_name}.path: {shown}: empty file (no header row)")
    return [name.strip() for name in fields]


def read_delimited(path: Path, shown: str, fmt: str, roles: Roles, field_name: str) -> Iterator[Record]:
    # TSV is read without quoting: the VADER files have fields that start with an unbalanced '"'
    # (e.g. `"  this problem vanished...`), which quote-aware parsing would run into the next rows.
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"delimiter": ","}
    with path.open("rb") as handle:
        bad_lines: set[int] = set()
        lines = PhysicalLines(decoded_lines(handle, bad_lines))
        header = read_header(lines, dialect, shown, field_name)
        require_columns(header, roles, shown, field_name, separator_hint(header, fmt, field_name))
        for raw in delimited_rows(lines, dialect, len(header)):
            undecodable = not bad_lines.isdisjoint(range(raw.first, raw.last + 1))
            yield delimited_record(shown, raw, header, roles, dialect["delimiter"], undecodable)


def separator_hint(header: list[str], fmt: str, field_name: str) -> str:
    """What to do when a header came out as one column holding another separator: a
    ';'-separated csv (as spreadsheets save it in many locales), a tab file read as csv, a
    comma file read as tsv."""
    if len(header) != 1:
        return ""
    other = {"csv": {"\t": f"set {field_name}.format: tsv", ";": "re-save it comma- or tab-separated"},
             "tsv": {",": f"set {field_name}.format: csv", ";": "re-save it comma- or tab-separated"}}[fmt]
    names = {"\t": "tab", ";": "';'", ",": "','"}
    for separator, fix in other.items():
        if separator in str(header[0]):
            return f"; its header looks {names[separator]}-separated and it is read as {fmt}: {fix}"
    return ""


def delimited_record(shown: str, raw: RawRow, header: list[str], roles: Roles, delimiter: str, undecodable: bool) -> Record:
    values = dict(zip(header, raw.fields))
    row_id = record_id(values.get(ID_COLUMN), raw.first)
    lines = raw.last - raw.first + 1
    # A stray quote outranks undecodable bytes: its row holds lines that are read again anyway.
    if raw.problem and (raw.problem.kind == "unbalanced_quote" or not undecodable):
        return unparsed(shown, raw.first, row_id, raw.fields[0], roles, raw.problem)
    record = Record(shown, raw.first, row_id, {role: values.get(column) for role, column in roles.items()}, lines=lines)
    if undecodable:
        record.problem = Bad("undecodable", "undecodable bytes (not UTF-8)")
    elif len(raw.fields) != len(header):
        problem = Bad("wrong_field_count", f"expected {len(header)} fields, got {len(raw.fields)}")
        return unparsed(shown, raw.first, row_id, delimiter.join(raw.fields), roles, problem)
    return record


def read_jsonl(path: Path, shown: str, roles: Roles, field_name: str) -> Iterator[Record]:
    columns = jsonl_columns(path, set(roles.values()))
    if columns is not None:
        require_columns(columns, roles, shown, field_name)
    with path.open("rb") as handle:
        for number, raw in enumerate(raw_lines(handle), start=1):
            if not raw.strip():
                continue
            obj, problem = parse_json_line(raw)
            if problem:
                yield unparsed(shown, number, str(number), raw.decode("utf-8", "replace").strip(), roles, problem)
                continue
            row_id = record_id(obj.get(ID_COLUMN), number)
            yield Record(shown, number, row_id, {role: obj.get(column) for role, column in roles.items()})


def jsonl_columns(path: Path, wanted: set[str]) -> Optional[list[str]]:
    """The keys of a jsonl file's objects, read until every wanted one has been seen (on a good
    file: the first object), or None when no line is a JSON object. A column is missing only when
    no object has it: an object that leaves a key out (a row without a label) is that row's
    problem, quarantined like a missing value, whichever line it is on."""
    keys: dict[str, None] = {}
    found = False
    with path.open("rb") as handle:
        for raw in raw_lines(handle):
            if not raw.strip():
                continue
            obj, problem = parse_json_line(raw)
            if problem:
                continue
            found = True
            keys.update(dict.fromkeys(obj))
            if wanted <= keys.keys():
                break
    return list(keys) if found else None


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


class LongRecords:
    """Records spanning many physical lines, or far longer than their file's typical record: kept,
    but flagged in the data report, since a stray quote that the parser could not tell from a
    multi-line text, or two files run together, look like this."""

    MAX_LINES = 10  # a record over this many physical lines is flagged
    LENGTH_FACTOR = 20  # ... or one this many times its file's median length
    MIN_CHARS = 1000  # ... and at least this long (short texts vary too much to judge)
    SHOWN = 10  # records listed in the report

    def __init__(self) -> None:
        self.lengths: dict[str, list[int]] = {}
        self.candidates: list[tuple[str, int, int, int]] = []  # (file, row, lines, chars)

    def see(self, record: Record) -> None:
        chars = sum(len(value) for value in record.values.values() if isinstance(value, str))
        self.lengths.setdefault(record.file, []).append(chars)
        if record.lines > 1 or chars >= self.MIN_CHARS:
            self.candidates.append((record.file, record.row, record.lines, chars))

    def report(self) -> dict:
        medians = {file: statistics.median(lengths) for file, lengths in self.lengths.items()}
        flagged = [
            {"file": file, "row": row, "lines": lines, "chars": chars}
            for file, row, lines, chars in self.candidates
            if lines > self.MAX_LINES or chars >= max(self.MIN_CHARS, self.LENGTH_FACTOR * medians[file])
        ]
        return {"total": len(flagged), "first": flagged[: self.SHOWN]}


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def clean_text(value: Any) -> str:
    """Whitespace normalised (runs of spaces, tabs and newlines become one space) and control
    characters (NUL, escape codes...) removed: they are never part of a text. The serving
    runtimes' own clean_text, so a deployed model is sent text cleaned as its training text was."""
    return "" if is_missing(value) else serving_clean_text(str(value))


def not_text(value: Any, role: str) -> Optional[Bad]:
    """A value that is there but is not a string (a list, a number, a mapping in JSON or
    parquet) is quarantined: its Python spelling would otherwise become training text."""
    if is_missing(value) or isinstance(value, str):
        return None
    return Bad("not_text", f"{role} is a {type(value).__name__}, not text: {str(value)[:80]!r}", role)


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
