"""The frozen decision set: the target test split that decides promotion (`python -m tasks
challenge`) and every reported score, fixed the first time a workspace's ingest runs.

With `data.split.freeze_test` (the default), ingest writes the target test split it drew to
`data/decision_set/target_test.jsonl` (plus `decision_set.json`: rows, sha256, labels) and every
later ingest reads it back as the target test split, whatever the target data now holds: a
refresh with new rows puts them into train/val only; an input row whose text (as leakage
removal compares texts) is in the set leaves train/val and is counted (`in_decision_set`);
a set row the data no longer holds stays in the set (`absent_from_data`). On unchanged data the
splits are exactly those of the first run. dvc.yaml declares the folder a `persist: true` output
of ingest, so DVC caches and versions it but never deletes it before ingest runs.

Changing it is explicit: `python -m tasks decision-set --reset` removes it (and says what that
invalidates); the next ingest draws a new one. `python -m tasks decision-set` shows it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tasks.common.errors import DataError
from tasks.common.io import atomic_dir, read_jsonl, write_json_atomic, write_jsonl_atomic
from tasks.common.paths import Paths
from tasks.params import Params

ROWS_FILE = "target_test.jsonl"
META_FILE = "decision_set.json"
RESET = "python -m tasks decision-set --reset"
# DVC refuses a plain `dvc checkout` over a modified output ("Can't remove the following unsaved
# files without confirmation. Use `--force`"): restoring an edited set needs --force.
RESTORE = "dvc checkout --force data/decision_set"


@dataclass
class DecisionSet:
    rows: list[dict]  # the target test split's rows, as ingest wrote them
    sha256: str  # of the rows file
    created: bool  # drawn by this run (the first), or read back

    def report(self, in_data: int, moved_to_train: int = 0) -> dict:
        """The data report's `decision_set` entry for the target domain."""
        entry = {"file": f"data/decision_set/{ROWS_FILE}", "rows": len(self.rows), "sha256": self.sha256,
                 "frozen": "drawn by this run" if self.created else "read back (frozen)",
                 "in_data": in_data, "absent_from_data": len(self.rows) - in_data if not self.created else 0}
        if moved_to_train:
            entry["test_rows_moved_to_train"] = moved_to_train
        return entry


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(paths: Paths) -> Optional[DecisionSet]:
    """The frozen set, or None when this workspace has none yet. An edited or truncated file is
    a data error naming it (the sha256 in decision_set.json no longer matches)."""
    rows_file, meta_file = paths.decision_set / ROWS_FILE, paths.decision_set / META_FILE
    if not rows_file.exists():
        return None
    digest = file_sha256(rows_file)
    recorded = json.loads(meta_file.read_text()).get("sha256") if meta_file.exists() else None
    if recorded != digest:
        raise DataError(f"{rows_file}: the frozen decision set was changed by hand (sha256 {digest[:12]}, "
                        f"recorded {str(recorded)[:12]}); restore it ({RESTORE}) or draw a new one: {RESET}")
    try:
        rows = read_jsonl(rows_file)
    except ValueError as err:
        raise DataError(f"{rows_file}: not valid JSON lines ({err}); restore it ({RESTORE}) or {RESET}") from None
    return DecisionSet(rows, digest, created=False)


def save(paths: Paths, rows: list[dict], describe: dict) -> DecisionSet:
    """Freeze `rows` (the test split this run drew) with what they are (`describe`: labels or
    languages), all at once: a killed run leaves no half-written set."""
    with atomic_dir(paths.decision_set) as tmp:
        write_jsonl_atomic(tmp / ROWS_FILE, rows)
        digest = file_sha256(tmp / ROWS_FILE)
        write_json_atomic(tmp / META_FILE, {"rows": len(rows), "sha256": digest, **describe})
    return DecisionSet(rows, digest, created=True)


def drawn_with(p: Params) -> dict:
    """The split params a decision set is drawn with (recorded with it; a later run with others says so)."""
    return {"seed": p.seed, "test_fraction": p.data.split.test_fraction}


def read_back(p: Params, paths: Paths, fits: list[tuple[str, set, str]]) -> Optional[DecisionSet]:
    """The workspace's frozen set for this run (None: none yet, or data.split.freeze_test off),
    with a note when other split params drew it, and each (row field, allowed values, what)
    of `fits` checked: the run's labels or languages."""
    frozen = load(paths) if p.data.split.freeze_test else None
    if frozen is not None:
        note_drawn_with(paths, drawn_with(p))
        for field, allowed, what in fits:
            check_fits(frozen, field, allowed, what)
    return frozen


def freeze(p: Params, paths: Paths, rows: list[dict], describe: dict) -> dict:
    """Freeze the test split this run drew (`describe`: its labels or languages); returns the
    data report's `decision_set` entry."""
    return save(paths, rows, {**describe, **drawn_with(p)}).report(in_data=len(rows))


def note_drawn_with(paths: Paths, drawn_with: dict) -> None:
    """A frozen set was drawn with other split params (seed, test_fraction) than this run's: it
    is kept all the same, and the run says so, with the way to draw a new one."""
    meta = json.loads((paths.decision_set / META_FILE).read_text())
    changed = [f"{key} {meta[key]} -> {value}" for key, value in drawn_with.items() if key in meta and meta[key] != value]
    if changed:
        print(f"ingest: note: the frozen decision set was drawn with other split params ({', '.join(changed)}); "
              f"it is kept (test rows do not move); to draw a new one: {RESET}", file=sys.stderr)


def check_fits(frozen: DecisionSet, field: str, allowed: set, what: str) -> None:
    """Every frozen row's `field` must still be one of `allowed` (the run's labels or languages)."""
    found = {row.get(field) for row in frozen.rows}
    if not found <= allowed:
        raise DataError(
            f"data/decision_set/{ROWS_FILE}: the frozen decision set has {field} {sorted(map(str, found - allowed))} "
            f"not in this run's {what} {sorted(map(str, allowed))}; scoring on another task needs a new decision "
            f"set: {RESET}"
        )


def describe(paths: Paths) -> str:
    """What `python -m tasks decision-set` prints."""
    frozen = load(paths)
    if frozen is None:
        return "decision set: none yet (the next ingest draws the target test split and freezes it)"
    meta = json.loads((paths.decision_set / META_FILE).read_text())
    extra = ", ".join(f"{key} {value}" for key, value in meta.items() if key not in ("rows", "sha256"))
    return f"decision set: data/decision_set/{ROWS_FILE}, {len(frozen.rows)} rows, sha256 {frozen.sha256[:12]}" + (
        f", {extra}" if extra else "")


def reset(paths: Paths) -> str:
    """Remove the frozen set; the line says what that invalidates."""
    try:
        frozen = load(paths)
    except DataError:  # an edited set: exactly what a reset is for
        frozen = None
    if frozen is None and not paths.decision_set.exists():
        return "decision set: none to reset (the next ingest draws one)"
    shutil.rmtree(paths.decision_set)
    shown = f"{len(frozen.rows)} rows, sha256 {frozen.sha256[:12]}" if frozen else "an edited or unreadable set"
    return (f"decision set reset ({shown} removed): the next ingest draws a new target test split. Every score "
            "measured on the old one (metrics/, reports/challenge.json, the registry's figures) is no longer "
            "comparable, and the next challenge scores the champion again on the new set.")
