"""Where each stage reads and writes, relative to the workspace root (the DVC repo).

dvc.yaml names the same paths; tests point `Paths(root=tmp_path)` at a temp workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOMAINS = ("source", "target")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    # ingest
    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    def split_file(self, domain: str, split: str) -> Path:
        return self.prepared / domain / f"{split}.jsonl"

    @property
    def decision_set(self) -> Path:
        """The frozen target test split (tasks/common/decision_set.py): ingest's persistent output."""
        return self.root / "data" / "decision_set"

    @property
    def quarantine(self) -> Path:
        return self.prepared / "quarantine.jsonl"

    @property
    def data_report(self) -> Path:
        return self.root / "reports" / "data.json"

    # tokenize
    @property
    def tokenized(self) -> Path:
        return self.root / "data" / "tokenized"

    @property
    def tokenizer(self) -> Path:
        return self.tokenized / "tokenizer"

    def tokenized_domain(self, domain: str) -> Path:
        return self.tokenized / domain

    @property
    def tokenize_report(self) -> Path:
        return self.root / "reports" / "tokenize.json"

    # models
    @property
    def source_model(self) -> Path:
        return self.root / "models" / "source"

    @property
    def target_model(self) -> Path:
        return self.root / "models" / "target"

    @property
    def baselines(self) -> Path:
        return self.root / "models" / "baselines"

    @property
    def onnx(self) -> Path:
        return self.root / "models" / "onnx"

    def checkpoints(self, stage: str) -> Path:
        # Not a DVC output: DVC deletes outputs before a run, which would defeat resume.
        return self.root / "checkpoints" / stage

    def live_dir(self, stage: str) -> Path:
        return self.root / "dvclive" / stage

    # evaluate
    @property
    def challenge_report(self) -> Path:
        """The last champion/challenger decision (python -m tasks challenge): not a DVC output,
        since it depends on which package is the champion, which DVC does not track."""
        return self.root / "reports" / "challenge.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"

    @property
    def evaluate_reports(self) -> Path:
        # per-row predictions (and translation samples): a directory so each kind writes its own files
        return self.root / "reports" / "evaluate"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def kind_plots(self, kind: str) -> Path:
        # evaluate's plot files, a folder per task kind: the stage's `plots/${task.kind}` output
        return self.plots / kind

    @property
    def plot_definitions(self) -> Path:
        # how `dvc plots show` draws them (template, axes): a dvc.yaml of their own, written by
        # evaluate beside them, since the shared root dvc.yaml cannot pick a template by task kind
        return self.plots / "dvc.yaml"
