"""Atomic file output and JSON/JSONL helpers: a killed stage leaves no half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _stale_name(name: str) -> re.Pattern[str]:
    # mkstemp/mkdtemp names are prefix + a random part without dots + suffix; requiring "no dot"
    # keeps `.model.<random>.tmp` from matching the temp `.model.onnx.<random>.tmp` of `model.onnx`.
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.tmp|\.{re.escape(name)}\.old")


def remove_stale_temps(final: Path) -> list[Path]:
    """Remove the temp siblings a killed writer of `final` left (`.{name}.*.tmp`, `.{name}.old`).

    Outputs are written beside their final path and renamed (atomic_dir, write_text_atomic); a
    kill -9 skips the cleanup, and DVC never sees these dot-names, so nothing else removes them.
    One writer per path is assumed (DVC's repository lock): only `final`'s own leftovers go.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = _stale_name(final.name)
    stale = [entry for entry in final.parent.iterdir() if pattern.fullmatch(entry.name)]
    for entry in stale:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return stale


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes owner-only files; outputs get the usual permissions like any other file.
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    tmp = _tmp_sibling(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> int:
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows]
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def make_readable(root: Path) -> None:
    """Give every file under `root` the read bits the umask allows (0o644 & ~umask, on top of
    its own mode). Some writers create owner-only files: transformers' save_pretrained writes
    model.safetensors mode 600, which a serving container's non-root user cannot read."""
    readable = 0o644 & ~_umask()
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            mode = path.stat().st_mode & 0o7777
            if mode | readable != mode:
                os.chmod(path, mode | readable)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temp directory beside `final`; on success it replaces `final` whole, its
    files readable as the umask allows (make_readable)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only
    try:
        yield tmp
        make_readable(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_plot_definitions(path: Path, kind: str, definitions: list[dict]) -> None:
    """plots/dvc.yaml: how `dvc plots show` draws the plot files a kind's evaluate writes."""
    import yaml

    header = (
        f"# Written by the evaluate stage (tasks/{kind}/evaluate.py) with the plot files it names:\n"
        "# how `dvc plots show` draws them (paths relative to this folder). Not in the root dvc.yaml:\n"
        "# every task kind shares that one, and DVC cannot choose a plot template by a param.\n"
    )
    write_text_atomic(path, header + yaml.safe_dump({"plots": definitions}, sort_keys=False))
