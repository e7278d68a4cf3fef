"""`python -m tasks <stage>`: the one entry point of every stage (what dvc.yaml runs).

Loads and validates params.yaml (or $PIPELINE_PARAMS), picks `run(params, paths)` of the stage
module of the params' task kind (`tasks/<kind>/<stage>.py`), runs it in the workspace and prints
one summary line. A user mistake (bad params, unreadable data, a missing earlier stage) is one
line `error: <stage>: ...` on stderr and exit code 1; anything else is a bug and keeps its
traceback. A stage first removes the temp leftovers a killed run of it left beside its outputs.
`python -m tasks challenge --champion DIR [--name v3]` scores this run's package (models/onnx)
against the champion's package DIR on the decision set and writes reports/challenge.json
(tasks/<kind>/challenge.py; not a DVC stage: which package is the champion is the registry's
business, flows/release.py). `python -m tasks decision-set [--reset]` shows (or removes) the
frozen decision set, tasks/common/decision_set.py. `python -m tasks check` validates the params; `check --inputs` also checks that every local
input (`data.<domain>.path`) is there, naming the field: the flow runs it before DVC, whose own
error for a missing dependency is `[Errno 2] No such file or directory: '<absolute path>'`.

Always `python -m tasks <stage>`, never `python tasks/<kind>/<stage>.py`: a file run by path
puts its folder on sys.path, where `tokenize.py` would shadow the standard library's.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Optional
from collections.abc import Sequence

import yaml

from tasks.common import prepared
from tasks.common.errors import DataError, ParamsError, user_errors
from tasks.common.io import remove_stale_temps
from tasks.common.paths import DOMAINS, Paths
from tasks.common.sources import is_url
from tasks.params import Params, SourceSpec, load_params, load_raw, params_path

STAGES = ("ingest", "tokenize", "pretrain", "finetune", "evaluate", "export")
CHECK = "check"
INPUTS = "--inputs"
CHALLENGE = "challenge"
DECISION_SET = "decision-set"
USAGE = (f"usage: python -m tasks {{{','.join(STAGES)}}} | python -m tasks {CHECK} [{INPUTS}] | "
         f"python -m tasks {CHALLENGE} --champion DIR [--name NAME] | python -m tasks {DECISION_SET} [--reset]")
HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w.-]+)?")  # `name` or `org/name`: what a missing hf path may be


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


def stage_outputs(stage: str, kind: str, paths: Paths) -> list[Path]:
    """What a stage writes through tasks.common.io: dvc.yaml's outs, and the files it writes one
    by one into folders it shares (metrics/, plots/)."""
    live = [paths.live_dir(stage) / "metrics.json", paths.live_dir(stage) / "plots"]
    return {
        "ingest": [paths.prepared, paths.decision_set, paths.data_report],
        "tokenize": [paths.tokenized, paths.tokenize_report],
        "pretrain": [paths.source_model, *live],
        "finetune": [paths.target_model, *live],
        "evaluate": [paths.baselines, paths.evaluate_reports, paths.kind_plots(kind), paths.plot_definitions,
                     paths.metrics / "scores.json", paths.metrics / "transfer.json"],
        "export": [paths.onnx, paths.metrics / "export.json"],
    }[stage]


def remove_leftovers(stage: str, kind: str, paths: Paths) -> None:
    """A kill -9 leaves `.<name>.*.tmp` beside an output (a whole data/prepared, say); DVC never
    sees them, so the stage that owns the output removes them before it starts."""
    removed = [entry for out in stage_outputs(stage, kind, paths) for entry in remove_stale_temps(out)]
    if removed:
        shown = ", ".join(entry.as_posix() for entry in removed)
        print(f"{stage}: removed what an interrupted run left: {shown}", file=sys.stderr)


def run_stage(stage: str, params: Params, paths: Paths) -> str:
    module = stage_module(params.task.kind, stage)
    remove_leftovers(stage, params.task.kind, paths)
    return summary(stage, module, module.run(params, paths))


# ---------------------------------------------------------------- check --inputs


def missing_text_files(spec: SourceSpec) -> list[str]:
    """Format text without splits reads `<path>.<lang>[.gz]` when path is not a directory
    (tasks/translation/ingest.py)."""
    langs = (spec.languages.src, spec.languages.tgt)
    return [f"{spec.path}.{lang}" for lang in langs
            if not any(Path(f"{spec.path}.{lang}{gz}").is_file() for gz in ("", ".gz"))]


def input_problem(spec: SourceSpec) -> Optional[str]:
    """Why a section's local input is not there, or None (URLs and hub ids are ingest's to fetch)."""
    path = Path(spec.path)
    if is_url(spec.path):
        return None
    if spec.format == "text" and spec.splits is None and spec.languages is not None and not path.is_dir():
        missing = " or ".join(f"{name}[.gz]" for name in missing_text_files(spec))
        if missing:
            return f"no {missing} (format text reads <path>.<lang>[.gz])"
        # The flow runs DVC, which hashes `path` itself: a stem is no file.
        return f"{spec.path} is a stem, which DVC cannot hash: move its two files into a directory of their own and set path to it"
    if path.exists() or (spec.format == "hf" and not path.is_absolute() and HUB_ID.fullmatch(spec.path)):
        return None
    return f"{spec.path}: no such file or directory"


def input_problems(params: Params) -> list[str]:
    """One line per data section whose local input is missing, named by its params field."""
    problems = [(domain, input_problem(getattr(params.data, domain))) for domain in DOMAINS]
    return [f"data.{domain}.path: {problem}" for domain, problem in problems if problem]


# ---------------------------------------------------------------- check: the keys DVC reads


DVC_FILE = Path("dvc.yaml")


def has_key(tree: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def missing_stage_params(params_file: Path, dvc_file: Path = DVC_FILE) -> Optional[str]:
    """The params that dvc.yaml's stages list and the params file leaves out, or None. The schema
    fills them with defaults for the stages, but DVC reads the file itself: `dvc repro` stops at
    the first stage listing one (export lists evaluate.generation: after every training stage
    ran), and `dvc exp run -S KEY=...` cannot set one. Only in a DVC workspace (dvc.yaml here)."""
    if not dvc_file.is_file():
        return None
    stages = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages") or {}
    raw = load_raw(params_file) or {}
    missing: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for key in (stage or {}).get("params") or []:
            if isinstance(key, str) and not has_key(raw, key):
                missing.setdefault(key, []).append(name)
    if not missing:
        return None
    keys = ", ".join(f"{key} ({', '.join(names)})" for key, names in missing.items())
    return (f"{params_file}: missing {keys}: {dvc_file}'s stages depend on these keys and DVC reads them from the "
            f"file itself; copy them from the repository's params.yaml (cp params.yaml my.yaml, then edit)")


def check(params: Params, inputs: bool) -> str:
    missing = missing_stage_params(params_path())
    if missing:
        raise ParamsError(missing)
    problems = input_problems(params) if inputs else []
    if problems:
        raise DataError("; ".join(problems))
    found = ", inputs found" if inputs else ""
    return f"{params_path()}: ok{found} (task {params.task.kind}, init {params.model.init})"


def stage_of(argv: Sequence[str]) -> str:
    if argv[:1] == [CHECK] and argv[1:] in ([], [INPUTS]):
        return CHECK
    if len(argv) != 1 or argv[0] not in STAGES:
        raise ParamsError(f"{' '.join(argv) or 'no stage given'}: {USAGE}")
    return argv[0]


def given(argv: Sequence[str]) -> str:
    return repr(" ".join(argv)) if argv else "no options"


def challenge_options(argv: Sequence[str]) -> dict[str, str]:
    """`--champion DIR [--name NAME]` after `challenge`, as {"--champion": DIR, "--name": NAME}."""
    pairs = dict(zip(argv[0::2], argv[1::2]))
    if len(argv) % 2 or "--champion" not in pairs or set(pairs) - {"--champion", "--name"}:
        raise ParamsError(f"expected --champion DIR [--name NAME], got {given(argv)}; {USAGE}")
    return pairs


def run_challenge(argv: Sequence[str]) -> str:
    from tasks.common.promotion import decision_line

    options = challenge_options(argv)
    params = load_params()
    result = stage_module(params.task.kind, CHALLENGE).run(params, Paths(), Path(options["--champion"]))
    return decision_line(result["decision"], options.get("--name", "the champion"))


def run_decision_set(argv: Sequence[str]) -> str:
    """Show the workspace's frozen decision set, or (--reset) remove it, saying what that invalidates."""
    from tasks.common import decision_set

    if argv not in ([], ["--reset"]):
        raise ParamsError(f"expected no option or --reset, got {given(argv)}; {USAGE}")
    return decision_set.reset(Paths()) if argv else decision_set.describe(Paths())


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [DECISION_SET]:
        with user_errors(DECISION_SET):
            print(run_decision_set(argv[1:]))
        return
    if argv[:1] == [CHALLENGE]:
        with user_errors(CHALLENGE):
            print(run_challenge(argv[1:]))
        return
    named = argv in ([CHECK], [CHECK, INPUTS]) or (len(argv) == 1 and argv[0] in STAGES)
    with user_errors(argv[0] if named else None):
        stage = stage_of(argv)
        params = load_params()
        if stage == CHECK:
            print(check(params, INPUTS in argv))
            return
        print(run_stage(stage, params, Paths()))


if __name__ == "__main__":
    main()
