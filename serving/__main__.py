"""`python -m serving [PACKAGE] [options]`: run an exported model package over stdin.

One text per stdin line (blank lines skipped) -> one JSON line on stdout:
  classification  {"text", "label", "logits"}
  translation     {"source", "translation"}; decodes as the evaluate stage did (the manifest's
                  beams, length penalty, repetition guards) unless --beams / --max-new-tokens say
                  otherwise; --threads N intra-op threads per graph.
PACKAGE defaults to $MODEL_DIR, else models/onnx. A bad package or option is one line on
stderr and exit code 1. Torch-free: the serve image's entrypoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

from serving.package import PackageError, package_task

# What the runtime imports; onnxruntime comes from the install's [cpu] or [gpu] extra.
RUNTIME_MODULES = ("onnxruntime", "tokenizers", "numpy")
INSTALL_HINT = "pip install 'transfer-serving[cpu]' (or [gpu]; from the repo: pip install './serving[cpu]')"


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A bad package or option is the user's to fix: one line on stderr, exit code 1."""
    try:
        yield
    except PackageError as err:
        print(f"error: serve: {err}", file=sys.stderr)
        sys.exit(1)
    except ModuleNotFoundError as err:
        if err.name not in RUNTIME_MODULES:
            raise
        print(f"error: serve: {err.name} is not installed: {INSTALL_HINT}", file=sys.stderr)
        sys.exit(1)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    parser.add_argument("package", nargs="?", default=os.environ.get("MODEL_DIR", "models/onnx"))
    parser.add_argument("--beams", type=int, default=None, help="translation: 1 = greedy; default: the manifest's num_beams")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="translation: default: the manifest's")
    parser.add_argument("--threads", type=int, default=None,
                        help="translation: intra-op threads per graph (default: TRANSLATOR_THREADS or 1)")
    return parser.parse_args(argv)


def input_texts() -> list[str]:
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def classify(package: str) -> None:
    from serving.classifier import OnnxClassifier

    classifier = OnnxClassifier(package)
    texts = input_texts()
    for text, row in zip(texts, classifier.logits(texts)):
        label = classifier.labels[int(row.argmax())]
        print(json.dumps({"text": text, "label": label, "logits": [round(float(x), 6) for x in row]}, ensure_ascii=False))


def translate(package: str, args: argparse.Namespace) -> None:
    from serving.translator import OnnxTranslator

    translator = OnnxTranslator(package, threads=args.threads)
    texts = input_texts()
    options = translator.decoding(num_beams=args.beams, max_new_tokens=args.max_new_tokens)
    for text, translation in zip(texts, translator.translate(texts, **options)):
        print(json.dumps({"source": text, "translation": translation}, ensure_ascii=False))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        if package_task(args.package) == "translation":
            translate(args.package, args)
        else:
            classify(args.package)


if __name__ == "__main__":
    main()
