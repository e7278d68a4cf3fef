"""`python -m tasks.common.serve [PACKAGE] [options]`: the serve image's entrypoint.

Reads the package's manifest.json and hands over to the runtime of its task: the classifier
(tasks.common.onnx_runtime: one JSON line {"text", "label", "logits"} per stdin line) or the
translator (tasks.common.seq2seq_runtime: {"source", "translation"}, `--beams N`). Torch-free.
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


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    positional = [arg for arg in argv if not arg.startswith("-")]
    package = Path(positional[0] if positional else os.environ.get("MODEL_DIR", "models/onnx"))
    with user_errors("serve"):
        task = package_task(package)
    if task == "translation":
        from tasks.common import seq2seq_runtime

        seq2seq_runtime.main(argv if positional else [str(package), *argv])
    else:
        from tasks.common import onnx_runtime

        sys.argv = [sys.argv[0], str(package)]
        onnx_runtime.main()


if __name__ == "__main__":
    main()
