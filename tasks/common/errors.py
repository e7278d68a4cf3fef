"""User-facing errors: raised with the file, field and value; printed as one line in `main`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from collections.abc import Iterator


class PipelineError(Exception):
    """A mistake the user can fix (bad params, unreadable file, missing column)."""


class ParamsError(PipelineError):
    """params.yaml is invalid."""


class DataError(PipelineError):
    """Input data is unreadable or unusable."""


class HandoffError(PipelineError):
    """A stage's input from the previous stage does not fit (labels, tokenizer, missing model)."""


class ExportError(PipelineError):
    """The exported model failed its checks (e.g. parity with PyTorch)."""


@contextmanager
def user_errors(stage: str | None = None) -> Iterator[None]:
    """Turn a PipelineError into one line on stderr and exit code 1; anything else is a bug
    and keeps its traceback."""
    try:
        yield
    except PipelineError as err:
        prefix = f"{stage}: " if stage else ""
        print(f"error: {prefix}{err}", file=sys.stderr)
        sys.exit(1)
