"""`python -m serving [PACKAGE] [options]`: run an exported model package, in one of two modes.

stdin mode (no --port): one text per stdin line -> one JSON line on stdout, in input order, each
printed (and flushed) as soon as it is produced, so results stream while input still comes
(`docker run -i`):
  classification  {"text", "label", "probabilities", "logits"}
  translation     {"source", "translation"}; decodes as the evaluate stage did (the manifest's
                  beams, length penalty, repetition guards) unless --beams / --max-new-tokens say
                  otherwise.
  A blank line gets {"error": "line N is empty", "line": N} in its place (a line that is not
  UTF-8: "line N is not UTF-8 text"), so line N of the output always answers line N of the input.

HTTP mode (--port N): a FastAPI server (serving/http.py): POST /v1/classify, POST /v1/translate,
GET /health, /ready, /metadata, /metrics; concurrent requests are batched dynamically
(--max-batch-size, --max-delay-ms); --max-texts and --max-chars bound a request. SIGTERM or
SIGINT: in-flight requests finish, exit code 0. An address that cannot be bound (a port in
use): one line on stderr, exit code 1. --follow DIR serves the package DIR/current links to and
swaps in a new one, between model calls, when the link moves (flows.release sync writes it);
every answer carries "model_version".

Both modes: --precision auto|fp32|int8 picks the graphs (auto: the manifest's serve_precision),
--threads N the intra-op threads per graph.

PACKAGE defaults to $MODEL_DIR, else models/onnx. A bad package (or int8 asked of one without
INT8 graphs) is one line on stderr and exit code 1 (a bad option: argparse's usage line and
error, exit code 2). Torch-free: the serve image's entrypoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

from serving.package import PRECISION_CHOICES, PackageError, is_blank, package_task

# What the runtime imports; onnxruntime comes from the install's [cpu] or [gpu] extra.
RUNTIME_MODULES = ("onnxruntime", "tokenizers", "numpy", "fastapi", "uvicorn", "prometheus_client", "pydantic", "starlette")
INSTALL_HINT = "pip install 'transfer-serving[cpu]' (or [gpu]; from the repo: pip install './serving[cpu]')"

# Not __doc__: `python -OO` (PYTHONOPTIMIZE=2) strips docstrings, and --help must still work.
DESCRIPTION = """\
Run an exported model package (classification or translation): over stdin, one JSON line per
input line, or as an HTTP server with --port."""
EPILOG = """\
modes:
  stdin (no --port)  one text per input line -> one JSON line per input line, in order, flushed as produced;
                     classification {"text", "label", "probabilities", "logits"}, translation {"source", "translation"};
                     a blank line gives {"error": "line N is empty", "line": N}
  HTTP (--port N)    POST /v1/classify {"texts": [...]}, POST /v1/translate {"texts": [...], "num_beams": k},
                     GET /health, /ready, /metadata, /metrics; SIGTERM finishes in-flight requests, exits 0

examples:
  python -m serving models/onnx < texts.txt > results.jsonl
  python -m serving models/onnx --port 8000 --host 0.0.0.0
  python -m serving models/onnx --precision int8 --threads 1 < texts.txt
  curl -s localhost:8000/v1/classify -H 'content-type: application/json' -d '{"texts": ["great value"]}'

A bad package, int8 without INT8 graphs, or a port in use: one line on stderr, exit code 1."""

LINES_PER_BATCH = 32  # stdin mode: the most lines one model call takes
READ_SIZE = 1 << 16


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


def positive(kind: type):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return number

    return parse


def non_negative_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return number


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", nargs="?", default=os.environ.get("MODEL_DIR", "models/onnx"),
                        help="an exported model package (default: $MODEL_DIR, else models/onnx)")
    parser.add_argument("--beams", type=positive(int), default=None,
                        help="stdin mode, translation: 1 = greedy; default: the manifest's num_beams")
    parser.add_argument("--max-new-tokens", type=positive(int), default=None,
                        help="stdin mode, translation: default: the manifest's")
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="auto",
                        help="graphs to load: auto (the manifest's serve_precision; fp32 without one), fp32 or int8 "
                             "(default: auto)")
    parser.add_argument("--threads", type=positive(int), default=None,
                        help="intra-op threads per graph (default: classification onnxruntime's, one per physical core; "
                             "translation TRANSLATOR_THREADS or 1)")
    http = parser.add_argument_group("HTTP mode")
    http.add_argument("--port", type=int, default=None, help="serve HTTP on this port (without it: stdin mode)")
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1; 0.0.0.0 in a container)")
    http.add_argument("--max-batch-size", type=positive(int), default=32, help="texts per model call (default: 32)")
    http.add_argument("--max-delay-ms", type=non_negative_float, default=5.0,
                      help="the longest a text waits for others to share its model call (default: 5)")
    http.add_argument("--max-texts", type=positive(int), default=64, help="texts per request (default: 64)")
    http.add_argument("--max-chars", type=positive(int), default=2000, help="characters per text (default: 2000)")
    http.add_argument("--follow", metavar="DIR", default=None,
                      help="serve the package DIR/current points at and swap in a new one when the link moves "
                           "(python -m flows.release sync --into DIR keeps it on the registry's prod); PACKAGE is then ignored")
    http.add_argument("--follow-interval", type=positive(float), default=5.0,
                      help="seconds between two looks at DIR/current (default: 5)")
    http.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                      help="uvicorn's log level (default: info)")
    http.add_argument("--no-access-log", action="store_true", help="no log line per request")
    args = parser.parse_args(argv)
    if args.port is not None and not 0 <= args.port <= 65535:
        parser.error(f"argument --port: must be 0..65535, got {args.port}")
    return args


# ---------------------------------------------------------------- stdin mode


def input_batches(fd: int = 0) -> Iterator[list[tuple[int, str, Optional[str]]]]:
    """(line number, text, what is wrong with it or None) for every input line, in batches of
    what has arrived so far (at most LINES_PER_BATCH): a piped file is read in big chunks, a
    line typed or written by another process is answered without waiting for more."""
    number, pending = 0, b""
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            lines = [pending] if pending else []
        else:
            *lines, pending = (pending + chunk).split(b"\n")
        batch: list[tuple[int, str, Optional[str]]] = []
        for raw in lines:
            number += 1
            try:
                text, problem = raw.decode("utf-8").rstrip("\r"), None
            except UnicodeDecodeError:
                text, problem = "", f"line {number} is not UTF-8 text"
            if problem is None and is_blank(text):
                problem = f"line {number} is empty"
            batch.append((number, text, problem))
            if len(batch) == LINES_PER_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch
        if not chunk:
            return


def emit(rows: Sequence[dict]) -> None:
    sys.stdout.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    sys.stdout.flush()


def stream(answer: Callable[[list[str]], list[dict]]) -> None:
    """answer(texts) -> one dict per text, run on each batch's good lines; a bad line gets
    {"error", "line"} in its place."""
    for batch in input_batches():
        texts = [text for _, text, problem in batch if problem is None]
        answers = iter(answer(texts) if texts else [])
        emit([next(answers) if problem is None else {"error": problem, "line": number} for number, _, problem in batch])


def classify(package: str, args: argparse.Namespace) -> None:
    from serving.classifier import OnnxClassifier, softmax

    classifier = OnnxClassifier(package, precision=args.precision, threads=args.threads)
    labels = classifier.labels

    def answer(texts: list[str]) -> list[dict]:
        logits = classifier.logits(texts)
        return [
            {
                "text": text,
                "label": labels[int(row.argmax())],
                "probabilities": {label: round(float(p), 6) for label, p in zip(labels, probs)},
                "logits": [round(float(x), 6) for x in row],
            }
            for text, row, probs in zip(texts, logits, softmax(logits))
        ]

    stream(answer)


def translate(package: str, args: argparse.Namespace) -> None:
    from serving.translator import OnnxTranslator

    translator = OnnxTranslator(package, threads=args.threads, precision=args.precision)
    options = translator.decoding(num_beams=args.beams, max_new_tokens=args.max_new_tokens)

    def answer(texts: list[str]) -> list[dict]:
        return [{"source": text, "translation": out} for text, out in zip(texts, translator.translate(texts, **options))]

    stream(answer)


# ---------------------------------------------------------------- HTTP mode


def serve_http(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serving.package import read_manifest, serve_precision

    if args.follow is not None:
        from serving.http import followed_package

        args.package = str(followed_package(Path(args.follow)))
    task = package_task(args.package)
    # Before listening: fields, digest, every file's hash, and the graphs --precision needs.
    manifest = read_manifest(args.package, task, verify=True)
    serve_precision(manifest, args.package, task, args.precision)
    from serving.http import Settings, run_server

    settings = Settings(max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms, max_texts=args.max_texts,
                        max_chars=args.max_chars, threads=args.threads, precision=args.precision)
    return run_server(args.package, task, args.host, args.port, settings, log_level=args.log_level,
                      access_log=not args.no_access_log, follow=Path(args.follow) if args.follow else None,
                      follow_interval=args.follow_interval)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    with one_line_errors():
        if args.port is not None:
            code = serve_http(args)
            if code:
                sys.exit(code)
            return
        try:
            if package_task(args.package) == "translation":
                translate(args.package, args)
            else:
                classify(args.package, args)
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)


if __name__ == "__main__":
    main()
