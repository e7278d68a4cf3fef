"""`python -m tasks.common.serve [PACKAGE] [options]`: the serve image's entrypoint.

Reads the package's manifest.json and hands over to the runtime of its task: the classifier
(tasks.common.onnx_runtime: one JSON line {"text", "label", "logits"} per stdin line) or the
translator (tasks.common.seq2seq_runtime: {"source", "translation"}, `--beams N`, `--threads N`). Torch-free.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tasks.common.errors import PipelineError, user_errors

MANIFEST = "manifest.json"


def package_task(package: Path) -> str:
    try:
        return json.loads((package / MANIFEST).read_text(encoding="utf-8")).get("task", "classification")
    except FileNotFoundError:
        raise PipelineError(f"{package}: no {MANIFEST}: not an exported model package (run the export stage)") from None
    except ValueError as err:
        raise PipelineError(f"{package / MANIFEST}: not valid JSON ({err})") from None


def split_package(argv: list[str]) -> tuple[Path, list[str]]:
    """The package is the first argument that is neither an option nor an option's value."""
    options_with_values = {"--beams", "--max-new-tokens", "--threads"}
    rest, package, skip = [], None, False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = arg in options_with_values
            rest.append(arg)
        elif package is None:
            package = arg
        else:
            rest.append(arg)
    return Path(package or os.environ.get("MODEL_DIR", "models/onnx")), rest


def main(argv: list[str] | None = None) -> None:
    package, options = split_package(list(sys.argv[1:] if argv is None else argv))
    with user_errors("serve"):
        task = package_task(package)
    if task == "translation":
        from tasks.common import seq2seq_runtime

        seq2seq_runtime.main([str(package), *options])
    else:
        from tasks.common import onnx_runtime

        sys.argv = [sys.argv[0], str(package)]
        onnx_runtime.main()


if __name__ == "__main__":
    main()
