"""Ingest: read the source and target corpora, label, clean, deduplicate and split them.

Writes `data/prepared/{source,target}/{train,val,test}.jsonl` (rows {"id", "text", "label"}; each
domain's label one of its own classes: `data.source.labels` for the source, `task.labels` for the
target; an unlabelled source, for `pretrain.mode: mlm`, has rows {"id", "text"}),
`data/prepared/quarantine.jsonl` (every bad row with its reason) and `reports/data.json`, whose
counts add up per domain:

    rows_read == kept + dropped_neutral + quarantined + duplicates + conflicting_duplicates
                 + leakage_removed

and per input file (`files` in the report; checked on every run, see prepared.file_accounts):
rows_read == kept + quarantined (by reason) + dropped (by reason). A fatal error (no usable
rows, one class) still writes the quarantine file and the report, with the error.

Inputs (`data.source` / `data.target`): a csv / tsv (.txt) / jsonl / parquet file or a directory
of them, an http(s) URL pinned by sha256, or (format "hf") a datasets hub id, a directory saved
with `save_to_disk`, or a directory of data files that `datasets.load_dataset` reads.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable

from tasks.common import decision_set, prepared
from tasks.common.decision_set import DecisionSet
from tasks.common.errors import DataError, ParamsError
from tasks.common.paths import DOMAINS, SPLITS, Paths
from tasks.common.sources import (
    READ_PROBLEMS,
    Bad,
    Record,
    clean_text,
    is_missing,
    json_safe,
    leak_key,
    not_text,
    read_records,
    resolve_input,
)
from tasks.params import LabelRule, Params, SplitParams, domain_labels, label_key

# Every reason a row can be quarantined for: the report lists each (zeros included), so
# `dvc metrics diff` compares like with like.
QUARANTINE_KINDS = READ_PROBLEMS + ("not_text", "empty_text", "missing_label", "not_a_number", "unknown_label")
RAW_SHOWN = 3  # the most common raw values a fatal error names
# The data report's note on an unlabelled domain (the source under pretrain.mode mlm)
UNLABELLED = "unlabelled: pretrain.mode mlm reads the source text only (no label column read, no label rule, split not stratified)"


@dataclass
class Example:
    file: str  # the input file it came from (for the per-file accounts)
    id: str
    text: str
    label: str | None  # None: an unlabelled domain's row
    order: int  # position in the input: outputs keep input order, so they are easy to diff

    def output(self) -> dict:
        row = {"id": self.id, "text": self.text}
        return row if self.label is None else {**row, "label": self.label}


@dataclass
class Domain(prepared.Domain):
    examples: list[Example] = field(default_factory=list)
    labels: list[str] | None = None  # its classes (the label rule maps into them); None: unlabelled


def domain_classes(p: Params, name: str) -> list[str] | None:
    """A domain's classes, or None when its labels are not read: the source under pretrain.mode
    mlm, which trains on the source text alone."""
    if name == "source" and p.pretrain.mode == "mlm":
        return None
    return domain_labels(p, name)


def labels_field(p: Params, name: str) -> str:
    """Where a domain's classes come from, as an error names them."""
    return "data.source.labels" if name == "source" and p.data.source.labels is not None else "task.labels"


def columns_of(domain: Domain) -> dict[str, str]:
    """The input columns classification reads, by role (the role is the `columns` key); an
    unlabelled domain's text only."""
    if domain.labels is None:
        return {"text": domain.spec.columns.text}
    return {"text": domain.spec.columns.text, "label": domain.spec.columns.label}


# ---------------------------------------------------------------- params consistency


def check_rules(p: Params) -> None:
    """Label-rule mistakes fail before any file is read: each domain's rule maps into that
    domain's own classes (an unlabelled source has no rule to check)."""
    for name in DOMAINS:
        labels = domain_classes(p, name)
        if labels is None:
            continue
        rule: LabelRule = getattr(p.data, name).label_rule
        field_name = f"data.{name}.label_rule"
        where = labels_field(p, name)
        if rule.kind == "threshold" and len(labels) != 2:
            hint = "; a source task of its own: data.source.labels, e.g. [negative, positive]" if name == "source" else ""
            raise ParamsError(
                f"{field_name}.kind: threshold needs exactly 2 classes (low, high) in {where}, got {labels}{hint}"
            )
        for raw, mapped in rule.mapping.items():
            if mapped not in labels:
                raise ParamsError(f"{field_name}.mapping: {raw!r} maps to {mapped!r}, not one of {where} {labels}")


# ---------------------------------------------------------------- labelling and cleaning


def apply_rule(raw: Any, rule: LabelRule, labels: list[str]) -> str | Bad | None:
    """The class name, a Bad to quarantine, or None for a neutral row (dropped and counted)."""
    if is_missing(raw):
        return Bad("missing_label", "missing label")
    if rule.kind == "threshold":
        return by_threshold(raw, rule, labels)
    name = rule.mapping.get(label_key(raw), label_key(raw))
    return name if name in labels else Bad("unknown_label", f"unknown label {name!r}")


def by_threshold(raw: Any, rule: LabelRule, labels: list[str]) -> str | Bad | None:
    try:
        score = float(raw)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score):
        return Bad("not_a_number", f"label {label_key(raw)!r} is not a number (label_rule threshold)")
    # At the threshold itself a score is neither side: neutral even when neutral_band is 0.
    if abs(score - rule.threshold) < rule.neutral_band or score == rule.threshold:
        return None
    return labels[1] if score > rule.threshold else labels[0]


def text_problem(record: Record, min_chars: int) -> Bad | None:
    """Why the row's text cannot be used (a Bad to quarantine it), or None."""
    if record.problem:
        return record.problem
    wrong_type = not_text(record.values["text"], "text")
    if wrong_type:
        return wrong_type
    text = clean_text(record.values["text"])
    if len(text) < min_chars:
        return Bad("empty_text", f"empty or too short text ({len(text)} chars, min_chars {min_chars})")
    return None


def judge(record: Record, rule: LabelRule, labels: list[str], min_chars: int) -> str | Bad | None:
    """The class name, a Bad to quarantine the row, or None for a neutral row."""
    return text_problem(record, min_chars) or apply_rule(record.values["label"], rule, labels)


def quarantine_row(domain: str, record: Record, bad: Bad) -> dict:
    return {
        "domain": domain,
        "file": record.file,
        "row": record.row,
        "kind": bad.kind,
        "reason": bad.reason,
        "text": json_safe(record.values["text"]),
        "raw_label": json_safe(record.values.get("label")),  # None: an unlabelled domain
    }


def label_records(domain: Domain, records: Iterable[Record], p: Params) -> None:
    rule = domain.spec.label_rule
    for record in records:
        domain.read_row(record.file)
        label: str | None = None
        if domain.labels is None:  # text only: kept, with no label, unless the text is bad
            bad = text_problem(record, p.data.min_chars)
        else:
            outcome = judge(record, rule, domain.labels, p.data.min_chars)
            if outcome is None:
                domain.tally(record.file, "neutral")
                continue
            bad, label = (outcome, None) if isinstance(outcome, Bad) else (None, outcome)
        if bad:
            domain.tally(record.file, f"quarantined.{bad.kind}")
            domain.quarantined.append(quarantine_row(domain.name, record, bad))
        else:
            domain.long_records.see(record)
            text = clean_text(record.values["text"])
            domain.examples.append(Example(record.file, record.id, text, label, len(domain.examples)))


def deduplicate(domain: Domain) -> None:
    """Keep the first of identical texts; drop every copy of a text that carries two labels.
    Texts count as identical as leakage removal sees them (case-insensitively)."""
    copies: dict[str, list[Example]] = {}
    for example in domain.examples:
        copies.setdefault(leak_key(example.text), []).append(example)
    kept = []
    for group in copies.values():  # insertion order: the first copy's position
        conflicting = len({example.label for example in group}) > 1
        if not conflicting:
            kept.append(group[0])
        for example in group if conflicting else group[1:]:
            domain.tally(example.file, "conflicting_duplicates" if conflicting else "duplicates")
    domain.examples = kept


def check_usable(domain: Domain) -> None:
    labels = Counter(example.label for example in domain.examples)
    if not labels:
        raise DataError(f"{domain.where}: no usable rows ({describe_losses(domain)}){common_raw_values(domain)}")
    if len(labels) < 2 and domain.labels is not None:  # unlabelled: text alone, no classes to count
        (only, count), = labels.items()
        raise DataError(
            f"{domain.where}: only one class after labelling ({only!r}: {count} rows; {describe_losses(domain)}); "
            f"a classifier needs at least two{common_raw_values(domain)}"
        )


def common_raw_values(domain: Domain) -> str:
    """The most common raw values behind the main quarantine reason, e.g. `; most common raw
    label among unknown_label rows: '1.0' (120), '0.0' (79)`: what the user has to map."""
    if not domain.quarantined:
        return ""
    reasons = Counter(row["kind"] for row in domain.quarantined)
    (kind, _), = reasons.most_common(1)
    column = "text" if kind in ("empty_text", "not_text") or kind in READ_PROBLEMS else "raw_label"
    values = Counter(repr(row[column])[:60] for row in domain.quarantined if row["kind"] == kind)
    shown = ", ".join(f"{value} ({n})" for value, n in values.most_common(RAW_SHOWN))
    return f"; most common {'text' if column == 'text' else 'raw label'} among {kind} rows: {shown}"


def describe_losses(domain: Domain) -> str:
    """E.g. "read 9, quarantined 2 (empty_text 2), neutral 7": where the rows went."""
    quarantined = {kind: domain.counts[f"quarantined.{kind}"] for kind in QUARANTINE_KINDS}
    detail = ", ".join(f"{kind} {n}" for kind, n in quarantined.items() if n)
    total = sum(quarantined.values())
    parts = [f"read {domain.rows_read}", f"quarantined {total} ({detail})" if detail else f"quarantined {total}"]
    dropped = ("neutral", "duplicates", "conflicting_duplicates")
    return ", ".join(parts + [f"{name} {domain.counts[name]}" for name in dropped if domain.counts[name]])


# ---------------------------------------------------------------- splitting and leakage


def split_sizes(n: int, fractions: SplitParams, where: str, label: str | None) -> tuple[int, int]:
    """(test, val) sizes for one class (label None: an unlabelled domain's rows): at least one
    each, and at least one left to train on."""
    n_test = max(1, round(n * fractions.test_fraction))
    n_val = max(1, round(n * fractions.val_fraction))
    if n - n_test - n_val < 1:
        what = "it has" if label is None else f"class {label!r} has"
        kind = "a" if label is None else "a stratified"
        raise DataError(f"{where}: {what} {n} usable rows, too few for {kind} train/val/test split (needs 3)")
    return n_test, n_val


def stratified_split(domain: Domain, fractions: SplitParams, seed: int, frozen: DecisionSet | None = None) -> None:
    """Split each class apart (an unlabelled domain: all its rows at random, as one group).
    With a frozen decision set, test is that set; each class's rows in it leave the class's
    shuffled order, and val/train are drawn from what is left exactly as without it, so on
    unchanged data the splits are those of the run that drew the set."""
    by_label: dict[str | None, list[Example]] = {}
    for example in domain.examples:
        by_label.setdefault(example.label, []).append(example)
    frozen_keys = None if frozen is None else {leak_key(row["text"]) for row in frozen.rows}
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for label in sorted(by_label, key=str):
        group = list(by_label[label])
        # One generator per class (a string seed hashes stably): a class's split does not move
        # when another class gains or loses rows.
        random.Random(f"{seed}:{domain.name}" if label is None else f"{seed}:{domain.name}:{label}").shuffle(group)
        n_test, n_val = split_sizes(len(group), fractions, domain.where, label)
        if frozen_keys is None:
            splits["test"] += group[:n_test]
            rest = group[n_test:]
        else:
            rest = prepared.take_out_decision_set(domain, group, lambda e: leak_key(e.text), frozen_keys)
        splits["val"] += rest[:n_val]
        splits["train"] += rest[n_val:]
    if frozen is not None:
        splits["test"] = frozen_examples(frozen)
        domain.decision = frozen.report(in_data=domain.counts[prepared.IN_DECISION_SET])
    domain.splits = {name: sorted(rows, key=lambda e: e.order) for name, rows in splits.items()}


def frozen_examples(frozen: DecisionSet) -> list[Example]:
    """The decision set's rows as test examples (their file: the set's own, outside the input
    accounts)."""
    file = f"data/decision_set/{decision_set.ROWS_FILE}"
    return [Example(file, row["id"], row["text"], row["label"], index) for index, row in enumerate(frozen.rows)]


def drop_keys(domain: Domain, split: str, keys: set[str], counter: str) -> None:
    kept = []
    for example in domain.splits[split]:
        if leak_key(example.text) in keys:
            domain.tally(example.file, counter)
        else:
            kept.append(example)
    domain.splits[split] = kept


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
        if missing == {None}:  # unlabelled
            raise DataError(f"{domain.where}: split {split!r} has no rows after removing leaked texts; too few rows")
        if missing:
            raise DataError(
                f"{domain.where}: split {split!r} has no {sorted(missing)} rows after removing leaked texts; "
                "too few rows for a stratified split"
            )


# ---------------------------------------------------------------- report and outputs


def domain_report(domain: Domain) -> dict:
    """The domain's classes and counts; before the split (a fatal error) its usable rows count
    as kept. An unlabelled domain has `labels` null, a note saying so and no per-class counts."""
    kept_rows = [e for rows in domain.splits.values() for e in rows] if domain.splits else domain.examples
    quarantined = {kind: domain.counts[f"quarantined.{kind}"] for kind in QUARANTINE_KINDS}
    leakage = {k.split(".", 1)[1]: n for k, n in sorted(domain.counts.items()) if k.startswith("leakage.")}
    splits = {
        name: {"rows": len(rows), "labels": {label: sum(e.label == label for e in rows) for label in domain.labels or []}}
        for name, rows in domain.splits.items()
    }
    unlabelled = {"note": UNLABELLED} if domain.labels is None else {}
    return {
        "labels": domain.labels,
        **unlabelled,
        "input": {**domain.input, "format": domain.spec.format, "max_rows": domain.spec.max_rows},
        "rows_read": domain.rows_read,
        "kept": len(kept_rows),
        "dropped_neutral": domain.counts["neutral"],
        "quarantined": {"total": sum(quarantined.values()), "by_reason": quarantined},
        "duplicates": domain.counts["duplicates"],
        "conflicting_duplicates": domain.counts["conflicting_duplicates"],
        "leakage_removed": {"total": sum(leakage.values()), **leakage},
        **({"decision_set": domain.decision} if domain.decision else {}),
        "splits": splits,
        "files": prepared.file_accounts(domain, kept_rows),
        "long_records": domain.long_records.report(),
    }


def build_report(domains: list[Domain], p: Params, paths: Paths) -> dict:
    return {
        "labels": list(p.task.labels),  # the target's; each domain lists its own
        "seed": p.seed,
        "split": p.data.split.model_dump(),
        "min_chars": p.data.min_chars,
        "quarantine_file": paths.quarantine.relative_to(paths.root).as_posix(),
        **{domain.name: domain_report(domain) for domain in domains},
    }


# ---------------------------------------------------------------- the stage


def read_domain(domain: Domain, p: Params, paths: Paths) -> None:
    cache_dir = paths.root / "data" / "cache"
    try:
        location, domain.input = resolve_input(domain.name, domain.spec, cache_dir)
        label_records(domain, read_records(domain.name, domain.spec, location, columns_of(domain), cache_dir), p)
    except OSError as err:  # unreadable file, permissions, a disk error: the user's to fix
        where = err.filename or domain.spec.path
        raise DataError(f"{domain.field_name}.path: {where}: cannot read: {err.strerror or err}") from None


def split_domain(domain: Domain, p: Params, frozen: DecisionSet | None) -> None:
    deduplicate(domain)
    check_usable(domain)
    stratified_split(domain, p.data.split, p.seed, frozen)
    remove_leaks(domain)


def run(p: Params, paths: Paths) -> dict:
    """Read, label, clean, split and write both domains; returns the report (reports/data.json).
    An input that cannot be read stops before anything is written; data that can be read but not
    used (no usable rows, one class) still writes the quarantine file and the report."""
    check_rules(p)
    frozen = decision_set.read_back(p, paths, [("label", set(p.task.labels), "task.labels")])
    domains = [Domain(name, getattr(p.data, name), labels=domain_classes(p, name)) for name in DOMAINS]
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
        rows = [example.output() for example in target.splits["test"]]
        target.decision = decision_set.freeze(p, paths, rows, {"labels": list(p.task.labels)})
