"""A classifier with the workspace's model shape and random weights, written as its models/target:
speed figures where the trained weights are not at hand (a GPU machine they cannot be copied to),
since a graph's latency depends on its shapes, not on its weights.

Usage (in the repository root, on a workspace whose ingest and tokenize stages have run):
  .venv/bin/python -m bench.random_twin WORKSPACE
  .venv/bin/python -m tasks export                 # in WORKSPACE (cd there first), as dvc.yaml runs it
  .venv/bin/python -m bench.inference WORKSPACE --device cuda

The twin is model.init's architecture (its config.json: layers, hidden size, heads, vocabulary) with
a fresh random init, the head model.pooling names over task.labels, and the tokenize stage's
tokenizer beside it, as the finetune stage saves its model. Only the init's config.json is read (no
weights). Timings, label agreement between runtimes and the export's parity checks
are real; macro-F1 is chance, and the export's INT8 gate should be given a wide
export.max_int8_drop, since a random model's INT8 drop measures nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from tasks.classification.model import POOLING_KEY, classifier_class, label_maps
from tasks.common.models import SCRATCH, resolve_init, save_model
from tasks.common.paths import Paths
from tasks.params import load_params


def random_twin(workspace: Path) -> dict:
    params = load_params(workspace / "params.yaml")
    if params.task.kind != "classification":
        raise SystemExit(f"{workspace}: task.kind {params.task.kind!r}; the twin is a classifier")
    if params.model.init == SCRATCH:
        raise SystemExit(f"{workspace}: model.init is scratch: its shape is model.scratch, train it instead")
    labels = params.task.labels
    init = init_folder(params.model.init, workspace)
    config = AutoConfig.from_pretrained(init, num_labels=len(labels), **label_maps(labels))
    setattr(config, POOLING_KEY, params.model.pooling)
    torch.manual_seed(params.seed)
    built = classifier_class(config, init)
    model = (built.from_config(config) if built is AutoModelForSequenceClassification else built(config)).eval()
    paths = Paths(workspace)
    if not paths.tokenizer.exists():
        raise SystemExit(f"{paths.tokenizer} not found: run the ingest and tokenize stages in {workspace} first")
    # The tokenize stage's tokenizer, as the finetune stage saves it beside its model.
    save_model(model, AutoTokenizer.from_pretrained(str(paths.tokenizer)), paths.target_model)
    return {"model_dir": str(paths.target_model), "init": init, "parameters": sum(p.numel() for p in model.parameters()),
            "pooling": params.model.pooling, "labels": labels}


def init_folder(init: str, workspace: Path) -> str:
    """model.init as the stages read it: they run inside the workspace, so a relative local
    path there means workspace/path, whatever folder this bench is started from."""
    resolved = resolve_init(init)
    in_workspace = workspace / resolved
    return str(in_workspace) if not Path(resolved).is_absolute() and in_workspace.exists() else resolved


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.random_twin", description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a classification run with params.yaml (its ingest and tokenize done)")
    print(json.dumps(random_twin(parser.parse_args().workspace)))


if __name__ == "__main__":
    main()
