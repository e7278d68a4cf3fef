"""`python -m tasks <stage>`: the one entry point of every stage (what dvc.yaml runs).

Loads and validates params.yaml (or $PIPELINE_PARAMS), picks `run(params, paths)` of the stage
module of the params' task kind (`tasks/<kind>/<stage>.py`), runs it in the workspace and prints
one summary line. A user mistake (bad params, unreadable data, a missing earlier stage) is one
line `error: <stage>: ...` on stderr and exit code 1; anything else is a bug and keeps its
traceback. `python -m tasks check` only validates the params.

Always `python -m tasks <stage>`, never `python tasks/<kind>/<stage>.py`: a file run by path
puts its folder on sys.path, where `tokenize.py` would shadow the standard library's.
"""

from __future__ import annotations

import importlib
import json
import sys
from types import ModuleType
from typing import Any, Optional
from collections.abc import Sequence

from tasks.common import prepared
from tasks.common.errors import ParamsError, user_errors
from tasks.common.paths import Paths
from tasks.params import Params, load_params, params_path

STAGES = ("ingest", "tokenize", "pretrain", "finetune", "evaluate", "export")
CHECK = "check"
USAGE = f"usage: python -m tasks {{{','.join(STAGES)}}} | python -m tasks {CHECK}"


def stage_module(kind: str, stage: str) -> ModuleType:
    """tasks.<kind>.<stage>: each kind is a package with one module per stage."""
    return importlib.import_module(f"tasks.{kind}.{stage}")


def summary(stage: str, module: ModuleType, result: Any) -> str:
    """The stage's own summary line when it has one, else its result's top-level figures."""
    if stage == "ingest":
        return prepared.summary(result)
    if hasattr(module, "summary"):
        return module.summary(result)
    scalars = {key: value for key, value in (result or {}).items() if isinstance(value, (int, float, str))}
    return f"{stage}: done" + (f" {json.dumps(scalars, sort_keys=True)}" if scalars else "")


def run_stage(stage: str, params: Params, paths: Paths) -> str:
    module = stage_module(params.task.kind, stage)
    return summary(stage, module, module.run(params, paths))


def stage_of(argv: Sequence[str]) -> str:
    if len(argv) != 1 or argv[0] not in (*STAGES, CHECK):
        raise ParamsError(f"{' '.join(argv) or 'no stage given'}: {USAGE}")
    return argv[0]


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    with user_errors(argv[0] if len(argv) == 1 and argv[0] in STAGES else None):
        stage = stage_of(argv)
        params = load_params()
        if stage == CHECK:
            print(f"{params_path()}: ok (task {params.task.kind}, init {params.model.init})")
            return
        print(run_stage(stage, params, Paths()))


if __name__ == "__main__":
    main()
