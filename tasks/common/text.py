"""Token-length statistics for the tokenize reports of every kind."""

from __future__ import annotations

import numpy as np


def lengths_summary(lengths, max_length: int) -> dict:
    """Token counts before truncation: mean, p50, p95, max and how many were truncated."""
    values = np.asarray(lengths)
    if values.size == 0:
        return {"rows": 0}
    return {
        "rows": int(values.size),
        "mean": round(float(values.mean()), 2),
        "p50": int(np.percentile(values, 50)),
        "p95": int(np.percentile(values, 95)),
        "max": int(values.max()),
        "truncated": int((values > max_length).sum()),
    }
