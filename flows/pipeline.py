"""The Prefect flow over the DVC pipeline: `python -m flows.pipeline [--root DIR] [--force]`.

Orchestration only. The stages and their order come from `dvc.yaml` (DVC's own graph), each
stage is one Prefect task that runs `dvc repro --single-item <stage>` in a subprocess, so DVC
decides what is stale and writes `dvc.lock`; Prefect adds retries, run history and a metrics
artifact. Stages run one at a time.

Retry rule (`retry_transient`): a failed stage is retried (2 more attempts, 5 s then 30 s
later) only when the failure may be transient: DVC's repository lock was held by another
process, or the stage's command died without printing an `error:` line (killed, out of
memory, network). A user error (the stage printed a line starting with `error:`) and a
refusal by DVC before the command ran (invalid dvc.yaml, missing dependency) are not
retried: the flow fails at once with that one line.

With `--release` (scheduled runs: flows/deploy.py), the run ends with champion / challenger: the
run's package (models/onnx) against the champion, the version GTO has in `prod`
(flows/release.py). No champion yet: the package is published as the first. The champion's own
package (same md5 in dvc.lock): "up to date", nothing to decide. Otherwise the champion's package
is fetched from the DVC remote, `python -m tasks challenge` scores both on the decision set, and
only a promoted challenger is published (pushed, committed, registered, assigned prod). A stage
that fails (the export's parity or INT8 gate included) stops the run before this step: nothing
is published and the champion keeps serving.

Exit code of `python -m flows.pipeline`: 0 when every stage ran or was up to date, 1 with one
line `error: ...` on stderr otherwise (invalid params.yaml, or a missing input file, is reported
before anything starts: `python -m tasks check --inputs` names the params field, where DVC would
only say `[Errno 2] No such file or directory` of the dependency).
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

# The flow's own Prefect defaults, before Prefect reads its settings, so a run outside `make`
# behaves like one under it: no analytics (offline, the telemetry call logs an ERROR).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows import release as registry
from tasks.common.errors import ParamsError
from tasks.params import PARAMS_FILE_ENV, DEFAULT_PARAMS_FILE, load_params

ARTIFACT_KEY = "transfer-metrics"
RETRIES = 2
RETRY_DELAYS = [5, 30]  # seconds before the 1st and the 2nd retry

# Files the artifact reads when they exist, under the repository root: (title, path).
METRIC_FILES = [
    ("Scores on the frozen test split", "metrics/scores.json"),
    ("Transfer", "metrics/transfer.json"),
]
DATA_REPORT = ("Data (rows kept, dropped and why)", "reports/data.json")
EXPORT_REPORT = ("Export (ONNX parity)", "metrics/export.json")

RAN, UP_TO_DATE, RESTORED = "ran", "up to date", "restored from run-cache"

# The kind's champion/challenger scoring (tasks/<kind>/challenge.py), run in the workspace.
CHALLENGE_COMMAND = [sys.executable, "-m", "tasks", "challenge"]
CHALLENGE_REPORT = "reports/challenge.json"

# DVC 3.67's own words (dvc/stage/__init__.py, dvc/stage/run.py, dvc/stage/cache.py, dvc/lock.py,
# dvc/rwlock.py). A user error is a line the stage prints (tasks.common.errors.user_errors).
_RAN = re.compile(r"^Running stage '(?P<name>[^']+)'")
_UP_TO_DATE = re.compile(r"^(?:Stage )?'(?P<name>[^']+)' didn't change, skipping")
_RESTORED = re.compile(r"^Stage '(?P<name>[^']+)' is cached - skipping run")
_USER_ERROR = re.compile(r"^error: ")  # lower case: DVC's own lines say "ERROR: "
_REPO_LOCK = "Unable to acquire lock"
_RW_LOCK = re.compile(r"is busy, it is being blocked by")
_BLOCKER = re.compile(r"\(PID (?P<pid>\d+)\): (?P<cmd>.*)")
_DVC_ERROR = re.compile(r"^ERROR: (?P<text>.*)")
# DVC's advice after each run (git add, autostage, dvc push): logged at debug level only.
_DVC_HINT = re.compile(
    r"^(To track the changes with git, run:|\s*git add |To enable auto staging, run:"
    r"|\s*dvc config core\.autostage true|Use `dvc push` to send your updates)"
)


class PipelineFailure(Exception):
    """A failure the flow reports as one line: `error: <str(self)>`. `transient`: retried
    (retry_transient) rather than reported at once."""

    transient = False


class ReleaseFailed(PipelineFailure):
    """The release step failed (flows.release said why); transient when its tool hit a lock or
    a remote that did not answer."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class StageFailed(PipelineFailure):
    """A stage's `dvc repro` failed. kind: user | dvc | lock | crash (see `classify_failure`)."""

    TRANSIENT = ("lock", "crash")

    def __init__(self, stage: str, kind: str, message: str):
        super().__init__(stage, kind, message)
        self.stage, self.kind, self.message = stage, kind, message

    @property
    def transient(self) -> bool:
        return self.kind in self.TRANSIENT

    def __str__(self) -> str:
        return self.message


@dataclass
class StageResult:
    stage: str
    status: str  # ran | up to date | restored from run-cache
    seconds: float
    attempts: int


# ----------------------------------------------------------------- reading DVC's view


def check_params(root: Path) -> None:
    """Validate params.yaml (or $PIPELINE_PARAMS, relative to the root like the stages read it)."""
    path = Path(os.environ.get(PARAMS_FILE_ENV, DEFAULT_PARAMS_FILE))
    path = path if path.is_absolute() else root / path
    try:
        load_params(path)
    except ParamsError as err:
        raise PipelineFailure(str(err)) from None


def check_inputs(root: Path) -> None:
    """`python -m tasks check --inputs` in the workspace, when it runs the pipeline's own stages:
    a missing input fails here with the params field that names it, not at DVC's missing
    dependency. flows may not import the check (lint-imports), so it runs as the stages do."""
    if not (root / "tasks" / "__main__.py").is_file():
        return  # some other DVC project: its stages check their own inputs
    done = subprocess.run([sys.executable, "-m", "tasks", "check", "--inputs"], cwd=root, env=child_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode:
        lines = (done.stderr + done.stdout).strip().splitlines()
        said = [line[len("error: "):] for line in lines if _USER_ERROR.match(line)]
        last = lines[-1] if lines else f"exit code {done.returncode}"
        raise PipelineFailure(said[-1] if said else f"check: python -m tasks check --inputs failed: {last}")


def stage_order(root: Path) -> list[str]:
    """The pipeline stages of the DVC repository at `root`, dependencies first.

    Computed from DVC's stage graph (edges go from a stage to the stages it depends on), as a
    topological order that keeps the order of the dvc.yaml files wherever the graph allows it:
    a linear dvc.yaml comes out in file order, a stage declared before its dependency comes
    after it. Stages from `.dvc` files (`dvc add`, imports) are data, not steps: left out.
    """
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    try:
        with Repo(str(root)) as repo:
            graph = repo.index.graph
            # data stages sort first (they never run), then the stages in dvc.yaml order
            position = {stage: (isinstance(stage, PipelineStage), index)
                        for index, stage in enumerate(repo.index.stages)}
            ordered = nx.lexicographical_topological_sort(graph.reverse(copy=True), key=position.__getitem__)
            names = [address(stage, repo.root_dir) for stage in ordered if isinstance(stage, PipelineStage)]
    except DvcException as err:
        raise PipelineFailure(f"{root}: dvc cannot read the pipeline: {one_line(err)}") from None
    if not names:
        raise PipelineFailure(f"{root}: dvc.yaml defines no stages")
    return names


def address(stage, root_dir: str) -> str:
    """The stage's name for `dvc repro` run in the root: `name` in ./dvc.yaml, else `path:name`
    (DVC's own `stage.addressing` is relative to the current directory, not to the root)."""
    relative = os.path.relpath(stage.path, root_dir)
    return stage.name if relative == "dvc.yaml" else f"{Path(relative).as_posix()}:{stage.name}"


def one_line(err: BaseException) -> str:
    """A DVC exception in one line, with the YAML problem and line number when that is the cause."""
    text = (str(err).strip().splitlines() or [type(err).__name__])[0]
    cause = err.__cause__ or err.__context__
    if cause is not None:
        problem = getattr(cause, "problem", None) or (str(cause).strip().splitlines() or [""])[0]
        mark = getattr(cause, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        text += f": {problem}{where}" if problem else ""
    return text


def stage_status(stage: str, lines: Iterable[str]) -> str:
    """Did `dvc repro --single-item <stage>` run the command, or find it up to date?"""
    for line in lines:
        for pattern, status in ((_RAN, RAN), (_RESTORED, RESTORED), (_UP_TO_DATE, UP_TO_DATE)):
            found = pattern.match(line)
            if found and found["name"] == stage:
                return status
    return UP_TO_DATE  # nothing to do and nothing said: a frozen stage, for one


def classify_failure(stage: str, root: Path, lines: list[str]) -> StageFailed:
    """Name why `dvc repro --single-item <stage>` failed, from its output, in one line.

    - lock:  another DVC process holds the repository lock or a lock on this stage's paths;
    - user:  the stage printed `error: ...` (a mistake the user must fix; the line is kept);
    - dvc:   DVC refused before the command ran (invalid dvc.yaml, missing dependency, ...);
    - crash: the command failed without an `error:` line (killed, out of memory, a bug).
    """
    text = "\n".join(lines)
    dvc_errors = [m["text"] for m in map(_DVC_ERROR.match, lines) if m]
    if _REPO_LOCK in text or _RW_LOCK.search(text):
        blocker = _BLOCKER.search(text)
        held_by = f" (PID {blocker['pid']}: {blocker['cmd'].strip()})" if blocker else ""
        lockfile = ".dvc/tmp/rwlock" if _RW_LOCK.search(text) else ".dvc/tmp/lock"
        return StageFailed(
            stage, "lock",
            f"{stage}: another pipeline run holds the DVC lock of {root}{held_by}; wait for it to "
            f"finish, or if no dvc process is running, remove {root / lockfile}",
        )
    user = [line for line in lines if _USER_ERROR.match(line)]
    if user:
        message = user[-1][len("error: "):].strip()
        if not message.startswith(f"{stage}:"):
            message = f"{stage}: {message}"
        return StageFailed(stage, "user", message)
    reason = dvc_errors[-1] if dvc_errors else "dvc repro failed with no message"
    if not any(_RAN.match(line) for line in lines):
        return StageFailed(stage, "dvc", f"{stage}: dvc: {reason}")
    tail = [line for line in lines if line.strip() and not _DVC_ERROR.match(line)]
    last = f"; last output: {tail[-1].strip()}" if tail else ""
    return StageFailed(stage, "crash", f"{stage}: the stage's command failed ({reason}){last}")


# ----------------------------------------------------------------- running one stage


def output_lines(stream, progress_every: float = 10.0) -> Iterator[str]:
    """The lines a child writes, as they come. Carriage-return redraws (progress bars) are
    thinned to one every `progress_every` seconds; the last one before a newline is kept."""
    pending, shown = b"", time.monotonic()
    for chunk in iter(lambda: stream.read1(1 << 16), b""):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", "replace")
        last_cr = pending.rfind(b"\r")
        if last_cr > 0 and time.monotonic() - shown >= progress_every:
            yield pending[:last_cr].rsplit(b"\r", 1)[-1].decode("utf-8", "replace")
            pending, shown = pending[last_cr:], time.monotonic()
    if pending.strip(b"\r"):
        yield pending.rstrip(b"\r").rsplit(b"\r", 1)[-1].decode("utf-8", "replace")


def child_env() -> dict[str, str]:
    """The caller's environment (HF_HUB_OFFLINE etc. pass through), with this interpreter's
    bin directory first on PATH so a stage's `python -m tasks <stage>` runs in the same venv."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    if env.get("PATH", "").split(os.pathsep)[0] != bindir:
        env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")  # stage output streams live, not at exit
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def dvc_repro(root: Path, stage: str, force: bool, log: logging.LoggerAdapter) -> tuple[int, list[str]]:
    """Run `dvc repro [--force] --single-item <stage>` in `root`, logging each output line."""
    command = [sys.executable, "-m", "dvc", "repro", *(["--force"] if force else []), "--single-item", stage]
    lines: list[str] = []
    process = subprocess.Popen(
        command, cwd=root, env=child_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        for line in output_lines(process.stdout):
            if line.strip():
                lines.append(line)
                level = logging.ERROR if _USER_ERROR.match(line) or _DVC_ERROR.match(line) else logging.INFO
                log.log(logging.DEBUG if _DVC_HINT.match(line) else level, line)
        return process.wait(), lines
    except BaseException:  # cancelled or interrupted: stop dvc and its stage, let DVC clean up
        for sig, grace in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(process.pid, sig)
                process.wait(grace)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        raise
    finally:
        process.stdout.close()


def retry_transient(_task, _task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry a lock collision, a crash or a remote that did not
    answer, never a user error."""
    try:
        state.result()
    except PipelineFailure as failure:
        return failure.transient
    except Exception:
        return False
    return False


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,  # DVC decides what is stale; Prefect never caches a stage
)
def run_stage(root: str, stage: str, force: bool = False) -> dict[str, Any]:
    from prefect.runtime import task_run

    log = get_run_logger()
    started = time.monotonic()
    code, lines = dvc_repro(Path(root), stage, force, log)
    if code != 0:
        raise classify_failure(stage, Path(root), lines)
    result = StageResult(stage, stage_status(stage, lines), round(time.monotonic() - started, 2), task_run.run_count)
    log.info("stage %s: %s", stage, result.status)
    return asdict(result)


# ----------------------------------------------------------------- reports


def flatten(data: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(key path, value) for every scalar leaf of a JSON document; lists and nulls are skipped."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flatten(value, prefix + (str(key),))
    elif isinstance(data, (bool, int, float)) or (isinstance(data, str) and len(data) <= 80):
        yield prefix, data


def rows_of(data: Any) -> list[tuple[str, str, Any]]:
    """(model, metric, value) rows: the first key names the model (or the domain, the check),
    the rest of the path the metric; a top-level scalar has no model ("-")."""
    return [(path[0], ".".join(path[1:]), value) if len(path) > 1 else ("-", path[0] if path else "-", value)
            for path, value in flatten(data)]


def shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def markdown_table(header: tuple[str, ...], rows: Iterable[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(shown(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def report_markdown(root: Path, results: list[dict]) -> str:
    """The Prefect artifact: the decision, the transfer table and its verdicts first, then the
    stages and every figure of the metric files."""
    transfer = read_json(root / "metrics/transfer.json") or {}
    verdicts = [f"- {line}" for line in verdict_lines(transfer) if line]
    parts = ["# Transfer pipeline run", "", f"Workspace `{root}`", ""]
    parts += [f"**Release:** {line}", ""] if (line := release_line(results)) else []
    if table := transfer_rows(transfer):
        parts += ["## Does transfer help?", "", markdown_table(TRANSFER_HEADER, table), "", *verdicts, ""]
    if (said := data_line(results)) is not None:
        changes = next(r.get("data_changes") for r in results if r["stage"] == "ingest")
        parts += ["## What changed in the data", "", said, ""]
        parts += [markdown_table(("domain", "split", "rows", "labels"), changes), ""] if changes else []
    parts += ["## Stages", "",
             markdown_table(("stage", "status", "seconds", "attempts"),
                            [(r["stage"], r["status"], r["seconds"], r["attempts"]) for r in results])]
    sections = [(title, rel, ("model", "metric", "value")) for title, rel in METRIC_FILES]
    sections += [(DATA_REPORT[0], DATA_REPORT[1], ("domain", "count", "value")),
                 (EXPORT_REPORT[0], EXPORT_REPORT[1], ("part", "figure", "value"))]
    for title, rel, header in sections:
        data = read_json(root / rel)
        if data is None:
            continue
        parts += ["", f"## {title} (`{rel}`)", "", markdown_table(header, rows_of(data))]
    return "\n".join(parts) + "\n"


def verdict_lines(transfer: dict) -> list[str]:
    """The evaluate stage's verdicts (is the gain real?) and what its budget curve supports."""
    said = [line for line in transfer.get("headline", []) if isinstance(line, str)]
    said += [line for line in (transfer.get("curve") or {}).values() if isinstance(line, str) and line]
    return ["", *said] if said else []


TRANSFER_HEADER = ("model", "score", "transfer's gain [95 % CI]", "verdict")


def transfer_rows(transfer: dict) -> list[tuple[str, str, str, str]]:
    """One row per model of metrics/transfer.json: its primary metric (macro-F1 or BLEU), and for
    a baseline the gain of transfer over it with its interval and verdict, in points (F1 x 100)."""
    if not isinstance(transfer.get("transfer"), (int, float)):
        return []
    metric = transfer.get("metric", "score")
    scale = 100 if metric == "f1_macro" else 1
    rows = [("transfer", f"{metric} {transfer['transfer']:.4g}", "", "")]
    intervals, verdicts = transfer.get("interval") or {}, transfer.get("verdict") or {}
    for name, score in (transfer.get("baselines") or {}).items():
        gain = transfer["transfer"] - score
        ci = intervals.get(name) or {}
        shown_ci = f" [{ci['low'] * scale:+.1f}, {ci['high'] * scale:+.1f}]" if {"low", "high"} <= set(ci) else ""
        rows.append((name, f"{metric} {score:.4g}", f"{gain * scale:+.1f}{shown_ci}", verdicts.get(name, "")))
    return rows


def data_changes(before: dict | None, after: dict | None, rows_before: dict | None = None,
                 rows_after: dict | None = None) -> list[tuple[str, str, str, str]] | None:
    """What this run's ingest changed, from reports/data.json before and after: (domain, split,
    rows before -> after, label counts before -> after) per split that changed; with the split
    files' rows before and after (prepared_rows), also how many rows came and went.
    None when there was no earlier report (a first build) or none now."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    changes = []
    for domain in ("source", "target"):
        for split in ("train", "val", "test"):
            old, new = split_counts(before, domain, split), split_counts(after, domain, split)
            moved = moved_rows(rows_before, rows_after, domain, split)
            if old != new or moved:
                rows_old, rows_new = old.get("rows", 0), new.get("rows", 0)
                detail = f"+{moved[0]} added, -{moved[1]} removed" if moved else f"{rows_new - rows_old:+d}"
                changes.append((domain, split, f"{rows_old} -> {rows_new} ({detail})",
                                label_changes(old.get("labels") or {}, new.get("labels") or {})))
    return changes


def prepared_rows(root: Path) -> dict[tuple[str, str], set[str]] | None:
    """Each split file's rows (their content, not their ids, which follow input row numbers),
    read before ingest runs (DVC deletes data/prepared first) and after; None when absent."""
    rows: dict[tuple[str, str], set[str]] = {}
    for domain in ("source", "target"):
        for split in ("train", "val", "test"):
            path = root / "data" / "prepared" / domain / f"{split}.jsonl"
            if not path.is_file():
                return None
            with path.open(encoding="utf-8") as lines:
                rows[domain, split] = {row_identity(line) for line in lines if line.strip()}
    return rows


def row_identity(line: str) -> str:
    try:
        row = json.loads(line)
    except ValueError:
        return line
    return json.dumps({key: value for key, value in row.items() if key != "id"}, sort_keys=True) if isinstance(row, dict) else line


def moved_rows(before: dict | None, after: dict | None, domain: str, split: str) -> tuple[int, int] | None:
    """(added, removed) rows of one split, or None when either side is unknown or nothing moved."""
    if before is None or after is None:
        return None
    old, new = before[domain, split], after[domain, split]
    added, removed = len(new - old), len(old - new)
    return (added, removed) if added or removed else None


def split_counts(report: dict, domain: str, split: str) -> dict:
    entry = ((report.get(domain) or {}).get("splits") or {}).get(split)
    return entry if isinstance(entry, dict) else {}


def label_changes(old: dict, new: dict) -> str:
    """E.g. "negative 600 -> 620, positive 858 -> 878": the classes whose counts moved."""
    labels = list(old) + [label for label in new if label not in old]
    return ", ".join(f"{label} {old.get(label, 0)} -> {new.get(label, 0)}" for label in labels
                     if old.get(label, 0) != new.get(label, 0))


def data_line(results: list[dict]) -> str | None:
    """One line on what the data did: first build, unchanged, or what changed per split."""
    ingest = next((r for r in results if r["stage"] == "ingest"), None)
    if ingest is None or "data_changes" not in ingest:
        return None
    changes = ingest["data_changes"]
    if changes is None:
        return "data: first build (no earlier reports/data.json to compare with)"
    if not changes:
        return "data: unchanged"
    return "data: " + "; ".join(f"{domain} {split} {rows}" + (f" [{labels}]" if labels else "")
                                for domain, split, rows, labels in changes)


def release_line(results: list[dict]) -> str | None:
    """The champion / challenger decision of a --release run, if it had one."""
    return next((r["line"] for r in results if r["stage"] == "release"), None)


def champion_of(results: list[dict]) -> str | None:
    return next((r.get("champion") for r in results if r["stage"] == "release"), None)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]


def summary_text(root: Path, results: list[dict]) -> str:
    """The closing summary (stdout, and the flow's log): the release decision and the champion,
    the transfer table with its verdicts, then the stages. Every other figure is in the Prefect
    artifact and the metric files."""
    transfer = read_json(root / "metrics/transfer.json") or {}
    decided = release_line(results)
    lines = [f"release: {decided}", f"champion: {champion_of(results) or 'none'}", ""] if decided else []
    if table := transfer_rows(transfer):
        lines += aligned([TRANSFER_HEADER, *table])
    lines += verdict_lines(transfer)
    lines += ["", said] if (said := data_line(results)) else []
    lines += ["", *aligned([("stage", "status", "seconds", "attempts")]
                         + [(r["stage"], r["status"], f"{r['seconds']:.1f}", str(r["attempts"])) for r in results])]
    lines += ["", f"every figure: metrics/*.json, reports/data.json and the Prefect artifact '{ARTIFACT_KEY}'"]
    return "\n".join(lines)


# ----------------------------------------------------------------- champion / challenger


def run_challenge(root: Path, package: Path, name: str) -> str:
    """`python -m tasks challenge` against the champion's package: its one decision line."""
    command = [*CHALLENGE_COMMAND, "--champion", str(package), "--name", name]
    done = subprocess.run(command, cwd=root, env=child_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    said = [line for line in (done.stderr if done.returncode else done.stdout).splitlines() if line.strip()]
    if done.returncode:
        errors = [line for line in said if _USER_ERROR.match(line)]
        raise PipelineFailure((errors or said or [f"challenge: exit code {done.returncode}"])[-1].removeprefix("error: "))
    return said[-1] if said else f"challenge against {name}: no decision printed"


def decide_and_publish(root: Path) -> dict:
    """The run's package against GTO's prod; published (and prod) when promoted or first."""
    current = registry.check_ready(root)["md5"]  # also: git can commit and tag, before any work
    champion = registry.champion(root)
    if champion is None:
        version = registry.publish(root, "first release: no champion yet")
        return {"published": version, "champion": version, "line": f"no champion yet: published {version} as prod"}
    if champion.package_md5 == current:
        return {"published": None, "champion": champion.version,
                "line": f"up to date: this run's package is champion {champion.version}'s, kept"}
    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
        _, package = registry.fetch(root, champion.version, Path(scratch) / "package")
        line = run_challenge(root, package, champion.version)
    decision = (read_json(root / CHALLENGE_REPORT) or {}).get("decision") or {}
    if not decision.get("promote"):
        return {"published": None, "champion": champion.version, "line": line, "decision": decision}
    version = registry.publish(root, line)
    return {"published": version, "champion": version, "line": f"{line}; published {version} as prod", "decision": decision}


@task(name="champion-challenger", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def release_step(root: str) -> dict:
    """Retried like a stage: publishing is atomic (flows.release), so a retry after a failed
    push finds either the old champion or the new one fully published."""
    try:
        outcome = decide_and_publish(Path(root))
    except registry.ReleaseError as err:
        raise ReleaseFailed(f"release: {err}", err.transient) from None
    get_run_logger().info(outcome["line"])
    return outcome


# ----------------------------------------------------------------- the flow


@flow(name="transfer-pipeline", description="Every stage of dvc.yaml, in DAG order, through dvc repro.")
def pipeline(root: str = ".", force: bool = False, release: bool = False, log_summary: bool = True) -> list[dict]:
    """Run each stage of the DVC pipeline at `root` (`force`: re-run even if up to date;
    `release`: then champion / challenger, and publish a promoted package; `log_summary`: log
    the closing summary, which `python -m flows.pipeline` prints itself, last, instead)."""
    log = get_run_logger()
    workspace = Path(root).resolve()
    check_params(workspace)
    check_inputs(workspace)
    stages = stage_order(workspace)
    log.info("stages from dvc.yaml: %s", " -> ".join(stages))
    results = []
    for stage in stages:
        if stage != "ingest":
            results.append(run_stage(str(workspace), stage, force))
            continue
        report_before, rows_before = read_json(workspace / DATA_REPORT[1]), prepared_rows(workspace)
        results.append(run_stage(str(workspace), stage, force))
        results[-1]["data_changes"] = data_changes(report_before, read_json(workspace / DATA_REPORT[1]),
                                                   rows_before, prepared_rows(workspace))
    if release:
        results.append({"stage": "release", "status": "decided", "seconds": 0.0, "attempts": 1,
                        **release_step(str(workspace))})
    create_markdown_artifact(
        key=ARTIFACT_KEY, markdown=report_markdown(workspace, results),
        description=f"Stages and metrics of the transfer pipeline at {workspace}",
    )
    if log_summary:  # a scheduled run's summary lives in its log; the CLI prints its own once
        log.info("\n%s", summary_text(workspace, results))
    return results


class _NoTracebackForReportedFailures(logging.Filter):
    """Prefect logs a failed task or flow with the traceback; for a failure that already says
    everything in one line (a stage's error, a lock), the traceback is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineFailure):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_NoTracebackForReportedFailures())


def cli(argv: list[str] | None = None) -> tuple[int, str]:
    """Run the flow as `python -m flows.pipeline` does; returns (exit code, what to print last:
    the summary table, or the one line `error: ...`)."""
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="the DVC repository (default: the current directory)")
    parser.add_argument("--force", action="store_true", help="re-run every stage even if up to date")
    parser.add_argument("--release", action="store_true",
                        help="then score the package against the champion (GTO's prod) and publish it if promoted")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    try:
        check_params(root)  # before Prefect starts anything
        check_inputs(root)
        results = pipeline(root=str(root), force=args.force, release=args.release, log_summary=False)
    except PipelineFailure as err:
        return 1, f"error: {err}"
    return 0, summary_text(root, results)


def _say_last(outcome: list[tuple[int, str]]) -> None:
    for code, text in outcome:
        print(text, file=sys.stdout if code == 0 else sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    outcome: list[tuple[int, str]] = []
    # Registered before Prefect starts its temporary server, so it runs after the server's own
    # exit handler ("Stopping temporary server ..."): the summary or the error line comes last.
    atexit.register(_say_last, outcome)
    code, text = cli(argv)
    outcome.append((code, text))
    sys.exit(code)


if __name__ == "__main__":
    main()
