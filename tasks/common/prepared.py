"""The prepared splits, `data/prepared/{source,target}/{train,val,test}.jsonl`: what ingest
writes (all at once, with the quarantine file) and what tokenize and evaluate read back.
Each kind decides the fields of its rows; the layout and the guarantees are shared."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tasks.common.errors import DataError, HandoffError
from tasks.common.io import atomic_dir, read_jsonl, write_json_atomic, write_jsonl_atomic
from tasks.common.paths import DOMAINS, SPLITS, Paths
from tasks.common.sources import LongRecords
from tasks.params import SourceSpec


@dataclass
class Domain:
    """One data section ("source" or "target") on its way through ingest. A kind extends it
    with what it collects while reading; `splits` holds rows with an `output()` method."""

    name: str
    spec: SourceSpec
    input: dict = field(default_factory=dict)  # the input's identity (path, sha256, ...) for the report
    quarantined: list[dict] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    splits: dict[str, list[Any]] = field(default_factory=dict)  # rows with `file` and `output()`
    by_file: dict[str, Counter] = field(default_factory=dict)  # the conservation law's ledger
    long_records: LongRecords = field(default_factory=LongRecords)
    decision: dict = field(default_factory=dict)  # the target's frozen decision set, for the report

    @property
    def rows_read(self) -> int:
        return sum(counts[ROWS_READ] for counts in self.by_file.values())

    def read_row(self, file: str) -> None:
        self.by_file.setdefault(file, Counter())[ROWS_READ] += 1

    def tally(self, file: str, outcome: str) -> None:
        """Where one row that was read went (other than kept): "quarantined.<reason>" or a
        reason it was dropped; counted for the domain and for the file it came from."""
        self.counts[outcome] += 1
        self.by_file.setdefault(file, Counter())[outcome] += 1

    @property
    def field_name(self) -> str:
        return f"data.{self.name}"

    @property
    def where(self) -> str:
        """How errors name this domain: the params section and the input it points at."""
        return f"data.{self.name} ({self.spec.path})"


ROWS_READ = "rows_read"
QUARANTINED = "quarantined."


def file_accounts(domain: Domain, kept_rows: Iterable[Any]) -> dict[str, dict]:
    """Per input file: rows_read == kept + quarantined (by reason) + dropped (by reason).
    Checked on every ingest: a row that went nowhere is a bug in ingest, not a user mistake."""
    kept = Counter(row.file for row in kept_rows)
    accounts = {}
    for file, counts in domain.by_file.items():
        quarantined = {k.removeprefix(QUARANTINED): n for k, n in sorted(counts.items()) if k.startswith(QUARANTINED)}
        dropped = {k: n for k, n in sorted(counts.items()) if k != ROWS_READ and not k.startswith(QUARANTINED)}
        account = {ROWS_READ: counts[ROWS_READ], "kept": kept[file], "quarantined": quarantined, "dropped": dropped}
        accounted = account["kept"] + sum(quarantined.values()) + sum(dropped.values())
        if accounted != account[ROWS_READ]:
            raise AssertionError(f"ingest lost track of rows of {file}: read {account[ROWS_READ]}, accounted for {accounted}: {account}")
        accounts[file] = account
    return accounts


IN_DECISION_SET = "in_decision_set"  # an input row whose text is in the frozen decision set


def take_out_decision_set(domain: Domain, rows: list[Any], key: Callable[[Any], str], frozen_keys: set[str]) -> list[Any]:
    """`rows` without those in the frozen decision set (tallied: they stay in test only)."""
    kept = []
    for row in rows:
        if key(row) in frozen_keys:
            domain.tally(row.file, IN_DECISION_SET)
        else:
            kept.append(row)
    return kept


def write_failed(domains: list[Domain], report: dict, error: Exception, paths: Paths) -> None:
    """A fatal data error still leaves something to inspect, and nothing stale: data/prepared
    becomes the quarantine file alone (no splits, so no later stage runs on old ones) and the
    data report holds the counts so far and the error."""
    with atomic_dir(paths.prepared) as tmp:
        quarantined = [row for domain in domains for row in domain.quarantined]
        write_jsonl_atomic(tmp / paths.quarantine.relative_to(paths.prepared), quarantined)
    write_json_atomic(paths.data_report, {**report, "error": str(error)})


def ingest(
    domains: list[Domain],
    read: Callable[[Domain], None],
    split: Callable[[Domain], None],
    finish: Callable[[list[Domain]], None],
    build_report: Callable[[list[Domain]], dict],
    paths: Paths,
) -> dict:
    """The order both kinds' ingest keeps: read every domain (an input that cannot be read stops
    here, nothing written), split each and `finish` (cross-domain leakage, final checks), then
    write. Data that was read but cannot be used still writes the quarantine file and report."""
    for domain in domains:
        read(domain)
    try:
        for domain in domains:
            split(domain)
        finish(domains)
    except DataError as err:
        write_failed(domains, build_report(domains), err, paths)
        raise
    report = build_report(domains)
    write_prepared(domains, report, paths)
    return report


def write_prepared(domains: list[Domain], report: dict, paths: Paths) -> None:
    """The whole of data/prepared appears at once, or not at all; then the data report."""
    with atomic_dir(paths.prepared) as tmp:
        for domain in domains:
            for split, rows in domain.splits.items():
                target = tmp / paths.split_file(domain.name, split).relative_to(paths.prepared)
                write_jsonl_atomic(target, (row.output() for row in rows))
        quarantined = [row for domain in domains for row in domain.quarantined]
        write_jsonl_atomic(tmp / paths.quarantine.relative_to(paths.prepared), quarantined)
    write_json_atomic(paths.data_report, report)


def prepared_split(paths: Paths, domain: str, split: str) -> list[dict]:
    file = paths.split_file(domain, split)
    if not file.exists():
        raise HandoffError(f"{file} not found: run the ingest stage first")
    try:
        return read_jsonl(file)
    except ValueError as err:  # an edited or truncated file
        raise DataError(f"{file}: not valid JSON lines ({err})") from None


def load_prepared(paths: Paths) -> dict[str, dict[str, list[dict]]]:
    """domain -> split -> rows, for every domain and split."""
    return {domain: {split: prepared_split(paths, domain, split) for split in SPLITS} for domain in DOMAINS}


def summary(report: dict) -> str:
    """The line `python -m tasks ingest` prints, for either kind."""
    parts = []
    for name in DOMAINS:
        d = report[name]
        sizes = "/".join(str(d["splits"][s]["rows"]) for s in SPLITS)
        quarantined = d["quarantined"]["total"]
        flagged = d["long_records"]["total"]
        note = f", {flagged} long records flagged" if flagged else ""
        undecodable = d["quarantined"].get("by_reason", {}).get("undecodable", 0)
        if undecodable:  # a whole file in latin-1 or cp1252 ingests with most of its rows lost: say why
            note += f", {undecodable} of them not UTF-8: re-save the file as UTF-8 (rows in {report['quarantine_file']})"
        parts.append(f"{name} {d['kept']} kept of {d['rows_read']} (train/val/test {sizes}, quarantined {quarantined}{note})")
    return "ingest: " + "; ".join(parts)
