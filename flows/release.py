"""Model registry: `python -m flows.release {publish,list,champion,rollback,fetch,sync} [--root DIR]`.

A release is built from DVC's and GTO's own records, nothing of ours:
- the package `models/onnx` (the `export` stage's output, declared as the artifact `onnx-model`
  under `artifacts:` in dvc.yaml), pushed to a DVC remote;
- a git commit of `dvc.lock` (which holds the package's md5), dvc.yaml, the remote's config and
  the small results DVC leaves to git (metrics/, plots, params.yaml);
- a GTO version tag on that commit (`onnx-model@v2.0.0`) and a GTO stage tag (`onnx-model#prod#N`).
The champion is whatever `gto show` says is in `prod`: the newest version whose prod assignment is
still active. Rollback unassigns prod from the champion (`gto deprecate onnx-model v2.0.0 prod`),
so prod falls back to the version that held it before, and a second rollback goes one further.
Resolve `prod` through `gto show` (champion(), `fetch prod`), not `dvc artifacts get --stage prod`:
DVC takes the newest tag that mentions the stage, and after a rollback that is the unassignment.

Publishing is atomic. Its steps run in this order, and each one only adds:
  1. configure the remote      (.dvc/config; the default: a directory in the workspace)
  2. `dvc push models/onnx`    (a directory's file objects go first, its .dir listing last)
  3. verify the remote holds it (`dvc status --cloud`: nothing new, nothing missing)
  4. git commit                (a plain commit: no tag names it yet, so it is no release)
  5. `gto register`            (the version tag: one atomic git ref; only if the commit's
                                dvc.lock names the package steps 2-3 pushed and verified)
  6. `gto assign --stage prod` (the stage tag: one atomic git ref; now it is the champion)
A version tag is created only after the remote was seen to hold the package (3 before 5), and
prod moves only to a registered version (5 before 6). Nothing is undone on failure, so there is
no cleanup a kill could interrupt. So a process killed anywhere leaves either
the old champion in prod (killed before 6; a version registered by 5 is complete but not served)
or the new one, fully published. Publishing again resumes: the push is a no-op, an unchanged
dvc.lock makes no new commit, a commit that already has a version keeps it.

The remote: `--remote NAME` (a configured DVC remote), `--remote URL_OR_PATH` (configured as
the remote `release`; S3/GCS/Azure need DVC's extras, `pip install "dvc[s3]"`), else `release`
when configured, else DVC's default remote, else the directory `<root>/.dvc/release-remote`.
A local directory is written to .dvc/config as an absolute path: DVC reads an old version's
config from its commit, where a relative path would resolve against the commit's tree.

`list` reads each version's metrics with `git show <commit>:metrics/<file>.json`: evaluate and
export write them with `cache: false`, committed by the release commit itself, so the figures are
the ones of that exact package, with no copy of ours that could drift from them.

`sync --into DIR` keeps a local folder following prod, for a server that has neither DVC nor GTO
(serving/ watches it and loads a new package when `current` moves). The contract it relies on:
- `DIR/current` is a relative symlink to `DIR/<version>/`, the package of the version in prod
  when sync last ran (`--every SECONDS` runs it forever; a failed round is retried the next);
- a `DIR/<version>` folder is complete and checked, or absent: fetch fills a hidden work folder
  and renames it into place, and pruning renames a folder aside (hidden) before removing it, so a
  half download or a half removal never carries a version's name;
- `current` moves by one atomic rename: a new link under a temp name in DIR, `os.replace`d over
  the old one, so a reader finds the old target or the new one, never none and never half a link;
- the `--keep` folders most recently current stay (default 2: current and the one before it), so
  a reader that resolved `current` just before it moved still finds its folder; the folder
  `current` names is never removed. A reader resolves `current` once (os.path.realpath) and reads
  every file of one load from that folder, so it never mixes two packages.
One sync runs at a time per DIR (a lock on DIR/.sync.lock); the next removes the hidden leftovers
(`.v1.2.3.*`, `.current.*`) of one that was killed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from tasks.common.errors import PipelineError, user_errors

ARTIFACT = "onnx-model"
STAGE = "prod"
REMOTE = "release"  # the DVC remote publish configures when none is named
DEFAULT_REMOTE_DIR = Path(".dvc") / "release-remote"
METRIC_FILES = ("metrics/transfer.json", "metrics/export.json")
MANIFEST = "manifest.json"
VERSION_TAG = re.compile(rf"^{re.escape(ARTIFACT)}@(?P<version>v\d+\.\d+\.\d+)$")  # a registration, not `...!` (its undoing)
CURRENT = "current"  # sync's symlink in its folder: DIR/current -> <version>
SYNC_LOCK = ".sync.lock"
VERSION_DIR = re.compile(r"^v\d+\.\d+\.\d+$")
SCRATCH = re.compile(r"^\.(v\d+\.\d+\.\d+|current)\.")  # fetch's work folders, temp links, folders pruned aside


class ReleaseError(PipelineError):
    """A release step failed; one line, printed as `error: release: ...`. `transient`: what a
    tool said looks like a passing condition (a lock held by another process, a remote that
    timed out or could not be reached), which the flow retries with backoff."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# What a failing git / dvc / gto command says when trying again later may well work.
TRANSIENT = re.compile(r"\block|timed? ?out|temporar|connection|unreachable|could not resolve|network|"
                       r"\b50[234]\b|too many requests|try again", re.IGNORECASE)


@dataclass
class Version:
    version: str
    commit: str
    date: str
    stages: list[str]
    package_md5: str
    champion: bool = False
    metrics: dict[str, dict | None] = field(default_factory=dict)


# ----------------------------------------------------------------- the tools, as subprocesses


def tool_env() -> dict[str, str]:
    """This interpreter's bin directory first on PATH (dvc, gto of this venv), no DVC analytics."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def gto_command() -> list[str]:
    beside = Path(sys.executable).with_name("gto")
    found = str(beside) if beside.exists() else shutil.which("gto")
    if found is None:
        raise ReleaseError("gto not found next to this Python or on PATH (make setup installs gto==1.10.1)")
    return [found]


def last_line(text: str) -> str:
    """What a tool said last, without its decoration ("ERROR: ", "❌ ")."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return re.sub(r"^(ERROR:\s*|❌\s*)", "", lines[-1]) if lines else ""


def run(root: Path, command: list[str], label: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a tool in the workspace; a failure is one line: what ran (`label`) and what it said last."""
    done = subprocess.run(command, cwd=root, env=tool_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and done.returncode:
        said = last_line(done.stderr) or last_line(done.stdout) or f"exit code {done.returncode}"
        raise ReleaseError(f"{label} failed: {said}", transient=bool(TRANSIENT.search(said)))
    return done


def git(root: Path, *args: str, check: bool = True) -> str:
    return run(root, ["git", *args], f"git {args[0]}", check).stdout.strip()


def dvc(root: Path, *args: str) -> str:
    return run(root, [sys.executable, "-m", "dvc", *args], f"dvc {args[0]}").stdout.strip()


def gto(root: Path, *args: str) -> str:
    return run(root, [*gto_command(), *args], f"gto {args[0]}").stdout.strip()


# ----------------------------------------------------------------- reading the registry


def check_workspace(root: Path) -> Path:
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        raise ReleaseError(f"{root}: not a DVC workspace (no .dvc/ or dvc.yaml); pass --root DIR")
    if run(root, ["git", "rev-parse", "--show-toplevel"], "git rev-parse", check=False).returncode:
        raise ReleaseError(f"{root}: not a git repository (git init)")
    return root


def artifact_path(dvc_yaml: str, where: str) -> str:
    """The package's path, as dvc.yaml's `artifacts:` declares it (what `dvc artifacts get` reads)."""
    declared = ((yaml.safe_load(dvc_yaml) or {}).get("artifacts") or {}).get(ARTIFACT) or {}
    if not declared.get("path"):
        raise ReleaseError(f"{where}: no artifact {ARTIFACT!r} with a path under `artifacts:` "
                           f"(artifacts: {{{ARTIFACT}: {{type: model, path: models/onnx}}}})")
    return str(declared["path"]).rstrip("/")


def committed(root: Path, commit: str, path: str) -> str | None:
    done = run(root, ["git", "show", f"{commit}:{path}"], "git show", check=False)
    return None if done.returncode else done.stdout


def lock_record(dvc_yaml: str, dvc_lock: str, where: str) -> dict:
    """The package's entry in dvc.lock: its path, md5 (of its .dir listing) and nfiles."""
    path = artifact_path(dvc_yaml, f"dvc.yaml {where}")
    lock = yaml.safe_load(dvc_lock) or {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if str(out.get("path", "")).rstrip("/") == path and out.get("md5"):
                return {"path": path, "md5": out["md5"], "nfiles": out.get("nfiles")}
    raise ReleaseError(f"dvc.lock {where} records no output {path} (run `dvc repro` before publishing)")


def package_record(root: Path, commit: str) -> dict:
    read = lambda name: committed(root, commit, name) or ""
    return lock_record(read("dvc.yaml"), read("dvc.lock"), f"at {commit[:8]}")


def committed_json(root: Path, commit: str, path: str) -> dict | None:
    text = committed(root, commit, path)
    try:
        return json.loads(text) if text is not None else None
    except ValueError:
        return None


def semver(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("+")[0].split("-")[0].split("."))


def version_tags(root: Path, commit: str | None = None) -> list[str]:
    """The registered versions (by their git tags), at `commit` or anywhere."""
    args = ["tag", "--points-at", commit] if commit else ["tag", "-l", f"{ARTIFACT}@v*"]
    found = [m["version"] for tag in git(root, *args).splitlines() if (m := VERSION_TAG.match(tag))]
    return sorted(found, key=semver, reverse=True)


def champion_version(root: Path) -> str | None:
    """What GTO says is in prod."""
    if not version_tags(root):
        return None
    state = json.loads(gto(root, "show", "--json") or "{}")
    return ((state.get(ARTIFACT) or {}).get("stage") or {}).get(STAGE)


def versions(root: Path) -> list[Version]:
    """Every registered version, newest first, with its active stages and committed metrics."""
    root = check_workspace(root)
    if not version_tags(root):
        return []
    shown = json.loads(gto(root, "show", ARTIFACT, "--json", "--versions-per-stage", "-1") or "[]")  # every active stage
    found = [Version(version=item["version"], commit=item["commit_hexsha"], date=item.get("created_at", ""),
                     stages=[s["stage"] for s in item.get("stages", [])],
                     package_md5=package_record(root, item["commit_hexsha"])["md5"],
                     metrics={path: committed_json(root, item["commit_hexsha"], path) for path in METRIC_FILES})
             for item in shown if item.get("registrations")]
    found.sort(key=lambda v: semver(v.version), reverse=True)
    best = next((v for v in found if STAGE in v.stages), None)  # what `gto show` names: the newest in prod
    if best is not None:
        best.champion = True
    return found


def champion(root: Path) -> Version | None:
    """The version in prod: its commit and the package md5 from that commit's dvc.lock."""
    root = check_workspace(root)
    best = champion_version(root)
    if best is None:
        return None
    tag = f"refs/tags/{ARTIFACT}@{best}"
    commit, date = git(root, "for-each-ref", "--format=%(*objectname) %(taggerdate:iso-strict)", tag).split()
    return Version(version=best, commit=commit, date=date, stages=[STAGE], champion=True,
                   package_md5=package_record(root, commit)["md5"],
                   metrics={path: committed_json(root, commit, path) for path in METRIC_FILES})


# ----------------------------------------------------------------- the remote


def dvc_config(root: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in dvc(root, "config", "--list").splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def remote_urls(config: dict[str, str]) -> dict[str, str]:
    return {key[len("remote."):-len(".url")]: value for key, value in config.items()
            if key.startswith("remote.") and key.endswith(".url")}


def existing_remote(root: Path, requested: str | None) -> str | None:
    """A remote already configured: the one named, else `release`, else DVC's default."""
    config = dvc_config(root)
    urls = remote_urls(config)
    if requested is not None:
        return requested if requested in urls else None
    return REMOTE if REMOTE in urls else config.get("core.remote")


def remote_url(requested: str | None, root: Path) -> str:
    """The URL a new `release` remote gets: the URL given, a local path made absolute, or the
    workspace's own directory (kept out of git by a .gitignore of its own)."""
    if requested is None:
        folder = root / DEFAULT_REMOTE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".gitignore").write_text("*\n")
        return str(folder)
    if "://" in requested:
        return requested
    if "/" not in requested and os.sep not in requested and not Path(requested).exists():
        raise ReleaseError(f"--remote {requested}: no DVC remote of that name (dvc remote list), "
                           f"and not a URL or a path (write ./{requested} for a folder)")
    return str(Path(requested).expanduser().resolve())


def configure_remote_named(root: Path, requested: str | None) -> str:
    if (name := existing_remote(root, requested)) is not None:
        return name
    url, config = remote_url(requested, root), dvc_config(root)
    if remote_urls(config).get(REMOTE) != url:
        default = [] if "core.remote" in config else ["--default"]  # so a bare `dvc pull` finds the releases
        dvc(root, "remote", "add", "--force", *default, REMOTE, url)
    return REMOTE


# ----------------------------------------------------------------- publish


@dataclass
class Release:
    root: Path
    message: str
    requested_remote: str | None
    remote: str = ""
    path: str = ""
    md5: str = ""  # the package dvc.lock records when publish starts: the one pushed and verified
    commit: str = ""
    version: str = ""


def configure_remote(r: Release) -> None:
    r.remote = configure_remote_named(r.root, r.requested_remote)


def push_package(r: Release) -> None:
    dvc(r.root, "push", "--remote", r.remote, r.path)


def verify_remote(r: Release) -> None:
    """DVC's own comparison of the cache with the remote: `{}` means the remote holds it all."""
    status = json.loads(dvc(r.root, "status", "--cloud", "--json", "--remote", r.remote, r.path) or "{}")
    if status:
        counts = {state: list(status.values()).count(state) for state in set(status.values())}
        raise ReleaseError(f"remote {r.remote!r} does not hold {r.path} after dvc push "
                           f"(dvc status --cloud: {', '.join(f'{n} {state}' for state, n in sorted(counts.items()))})")


def release_files(root: Path) -> list[str]:
    """dvc.lock and what goes with it: dvc.yaml (the artifact), .dvc/config (the remote), the
    params files and every output DVC leaves to git (`cache: false`: metrics, plots)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    stages = (lock.get("stages") or {}).values()
    paths = ["dvc.yaml", "dvc.lock", ".dvc/config"]
    paths += sorted({name for stage in stages for name in (stage.get("params") or {})})
    paths += sorted({str(out["path"]) for stage in stages for out in stage.get("outs") or []})
    present = list(dict.fromkeys(p for p in paths if (root / p).exists()))
    ignored = set(run(root, ["git", "check-ignore", "--", *present], "git check-ignore", check=False).stdout.split())
    return [p for p in present if p not in ignored]


def commit_release(r: Release) -> None:
    files = release_files(r.root)
    git(r.root, "add", "--", *files)
    if git(r.root, "status", "--porcelain", "--", *files):
        git(r.root, "commit", "-q", "-m", r.message, "--", *files)
    r.commit = git(r.root, "rev-parse", "HEAD")


def register_version(r: Release) -> None:
    """A new major version at the commit, or the one it already has (a resumed publish). Only
    when the commit's dvc.lock names the package that was pushed and verified: a `dvc repro`
    that rewrote dvc.lock meanwhile would otherwise tag a package the remote may not hold."""
    if (committed_md5 := package_record(r.root, r.commit)["md5"]) != r.md5:
        raise ReleaseError(f"dvc.lock changed while publishing ({r.path}: {r.md5} was pushed, {committed_md5} "
                           "was committed); publish again")
    if at_commit := version_tags(r.root, r.commit):
        r.version = at_commit[0]
        return
    bump = ["--bump-major"] if version_tags(r.root) else ["--version", "v1.0.0"]  # GTO cannot bump from nothing
    gto(r.root, "register", ARTIFACT, r.commit, *bump, "-m", r.message)
    r.version = version_tags(r.root, r.commit)[0]


def promote(r: Release) -> None:
    """Assign prod. GTO's prod is the newest version with an active prod assignment, so an older
    version (a resumed publish of an old commit) cannot pass a newer champion: say so."""
    best = champion_version(r.root)
    if best == r.version:
        return
    if best is not None and semver(best) > semver(r.version):
        raise ReleaseError(f"{r.version} is registered, but {best} is in {STAGE} and newer: "
                           f"roll back (python -m flows.release rollback) to move {STAGE} below it")
    gto(r.root, "assign", ARTIFACT, "--version", r.version, "--stage", STAGE, "--simple", "false",
            "-m", f"champion: {r.message}")


PUBLISH_STEPS: tuple[Callable[[Release], None], ...] = (
    configure_remote, push_package, verify_remote, commit_release, register_version, promote,
)


def run_step(step: Callable[[Release], None], release: Release) -> None:
    """The one place every step passes through: the tests stop publish here, between two steps."""
    step(release)


def check_ready(root: Path) -> dict:
    """What publish needs, checked before anything happens rather than between steps: dvc.lock
    records the package, and git has an author for the commit and the tags. Returns its record."""
    if not (root / "dvc.lock").is_file():
        raise ReleaseError(f"{root}: no dvc.lock (run `dvc repro` before publishing)")
    record = lock_record((root / "dvc.yaml").read_text(), (root / "dvc.lock").read_text(), f"in {root}")
    if not (git(root, "config", "user.name", check=False) and git(root, "config", "user.email", check=False)):
        raise ReleaseError(f"git has no user.name/user.email in {root} to commit and tag a release "
                           f"(git -C {root} config user.email you@example.com)")
    return record


def publish(root: Path, message: str, remote: str | None = None) -> str:
    """Make the workspace's package a release and the champion; returns its version."""
    release = Release(root=check_workspace(root), message=message, requested_remote=remote)
    record = check_ready(release.root)
    release.path, release.md5 = record["path"], record["md5"]
    for step in PUBLISH_STEPS:
        run_step(step, release)
    return release.version


# ----------------------------------------------------------------- rollback and fetch


def rollback(root: Path) -> tuple[str, str]:
    """Unassign prod from the champion; prod falls back to the version that held it before."""
    root = check_workspace(root)
    found = versions(root)
    current = next((v.version for v in found if v.champion), None)
    if current is None:
        raise ReleaseError(f"no version of {ARTIFACT} is in {STAGE}: nothing to roll back")
    earlier = [v.version for v in found if STAGE in v.stages and semver(v.version) < semver(current)]
    if not earlier:
        raise ReleaseError(f"{current} is the first {STAGE} version of {ARTIFACT}: there is none to roll back to")
    gto(root, "deprecate", ARTIFACT, current, STAGE, "--simple", "false", "-m", f"rollback: {current} -> {earlier[0]}")
    now = champion_version(root)
    if now != earlier[0]:
        raise ReleaseError(f"after unassigning {current}, GTO says {STAGE} is {now}, not {earlier[0]}")
    return current, now


def resolve_version(root: Path, ref: str) -> str:
    """`prod`, `v2.0.0` or `v2` (the major version) -> a registered version."""
    registered = version_tags(root)
    if ref == STAGE:
        found = champion_version(root)
        if found is None:
            raise ReleaseError(f"no version of {ARTIFACT} is in {STAGE}")
        return found
    wanted = f"{ref}.0.0" if re.fullmatch(r"v\d+", ref) else ref
    if wanted not in registered:
        raise ReleaseError(f"no version {ref} of {ARTIFACT} (registered: {', '.join(registered) or 'none'})")
    return wanted


def fetch(root: Path, ref: str, out: Path, remote: str | None = None) -> tuple[str, Path]:
    """Download version `ref` from the remote into `out` (a new folder), checked and moved in whole."""
    root, out = check_workspace(root), Path(out).resolve()
    version = resolve_version(root, ref)
    if out.exists():
        raise ReleaseError(f"--out {out}: already exists")
    name = existing_remote(root, remote)
    if name is None:
        raise ReleaseError(f"--remote {remote}: not a configured DVC remote" if remote else "no DVC remote configured: publish first")
    record = package_record(root, git(root, "rev-list", "-n", "1", f"{ARTIFACT}@{version}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        package = download(root, version, name, work)
        check_package(package, version, record)
        package.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return version, out


def download(root: Path, version: str, remote: str, work: Path) -> Path:
    """`dvc artifacts get` with an empty cache of its own: the files come from the remote, not
    from the workspace's cache, so a fetched package proves the remote holds it."""
    config = work / "dvc-config"
    config.write_text(f"[cache]\n    dir = {work / 'cache'}\n")
    package = work / "package"
    dvc(root, "artifacts", "get", str(root), ARTIFACT, "--rev", version, "--remote", remote,
        "--config", str(config), "--out", str(package))
    return package


def check_package(package: Path, version: str, record: dict) -> None:
    if not (package / MANIFEST).is_file():
        raise ReleaseError(f"{version}: the fetched package has no {MANIFEST}")
    files = sum(1 for path in package.rglob("*") if path.is_file())
    if record.get("nfiles") is not None and files != record["nfiles"]:
        raise ReleaseError(f"{version}: fetched {files} files, dvc.lock records {record['nfiles']}")


# ----------------------------------------------------------------- sync: a local folder that follows prod


def sync(root: Path, into: Path, remote: str | None = None, keep: int = 2) -> str:
    """Make `into/current` name the prod version's package, fetched when `into` lacks it, and keep
    the `keep` most recently current version folders (the module docstring has the contract)."""
    return sync_once(root, into, remote, keep)[0]


def sync_once(root: Path, into: Path, remote: str | None = None, keep: int = 2) -> tuple[str, bool]:
    """sync(); also says whether `current` moved."""
    if keep < 1:
        raise ReleaseError(f"--keep {keep}: keep at least 1 version folder (the current one)")
    root, into = check_workspace(root), Path(into).resolve()
    best = champion_version(root)
    if best is None:
        raise ReleaseError(f"no version of {ARTIFACT} is in {STAGE}: nothing to sync")
    try:
        into.mkdir(parents=True, exist_ok=True)
        with sync_lock(into):
            clear_scratch(into)
            if not (into / best).exists():
                fetch(root, best, into / best, remote)
            check_complete(into / best)
            moved = point_current(into, best)
            prune(into, keep)
    except OSError as err:  # a folder we cannot write or read: the user's to fix, one line
        raise ReleaseError(f"sync into {into}: {err}") from err
    return best, moved


@contextmanager
def sync_lock(into: Path) -> Iterator[None]:
    """One sync per folder: two would fetch the same version at once and prune under each other."""
    with open(into / SYNC_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReleaseError(f"{into}: another sync is running (it holds {SYNC_LOCK})") from None
        yield  # the lock goes with the file's closing, or with the process if it is killed


def clear_scratch(into: Path) -> None:
    """What a killed sync left: a fetch's work folder, a temp link, a folder renamed aside to go."""
    for path in into.iterdir():
        if not SCRATCH.match(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def check_complete(folder: Path) -> None:
    """Only fetch puts a version's folder in place, whole; anything else there is not ours to serve."""
    if not (folder / MANIFEST).is_file():
        raise ReleaseError(f"{folder}: has no {MANIFEST}, so sync did not fetch it; remove it and sync again")


def current_target(into: Path) -> str | None:
    """What `into/current` points at (as written in the link), None before the first sync."""
    link = into / CURRENT
    if link.is_symlink():
        return os.readlink(link)
    if link.exists():
        raise ReleaseError(f"{link}: not a symlink; sync keeps it a link to a version folder, remove it")
    return None


def point_current(into: Path, version: str) -> bool:
    """Point `into/current` at `version` unless it does already; True when it moved. A new link
    under a temp name, renamed over the old: rename is atomic, a reader never finds no link."""
    if current_target(into) == version:
        return False
    os.utime(into / version)  # its mtime now says when it became current: what prune keeps by
    temp = into / f".{CURRENT}.{secrets.token_hex(6)}"
    os.symlink(version, temp)  # relative: the folder stays valid when mounted or moved elsewhere
    try:
        os.replace(temp, into / CURRENT)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return True


def prune(into: Path, keep: int) -> list[str]:
    """Remove version folders beyond the `keep` most recently current (current counts and is never
    removed). Each is renamed aside first, so a half-removed folder never keeps a version's name."""
    current = (into / CURRENT).resolve()
    folders = [p for p in into.iterdir() if VERSION_DIR.match(p.name) and p.is_dir() and not p.is_symlink()]
    others = sorted((p for p in folders if p.resolve() != current), key=recency, reverse=True)
    removed = []
    for old in others[keep - 1:]:
        aside = into / f".{old.name}.pruned-{secrets.token_hex(6)}"
        old.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)  # what is left is scratch, removed by the next sync
        removed.append(old.name)
    return removed


def recency(folder: Path) -> tuple[int, tuple[int, ...]]:
    """When the folder last became current (point_current sets its mtime); the version breaks ties."""
    return folder.stat().st_mtime_ns, semver(folder.name)


def sync_line(version: str, moved: bool) -> str:
    return f"{CURRENT} -> {version}" if moved else f"{CURRENT} is {version} (unchanged)"


def follow(root: Path, into: Path, remote: str | None, keep: int, every: float) -> None:
    """`sync --every`: a line when `current` moves (and one for the first round). A failed round
    is one line on stderr and the next one retries: a remote or git server that is briefly away
    must not stop the folder from following prod. Ctrl-C ends it."""
    check_workspace(root)  # a wrong --root is a mistake to fix, not a failure to retry
    first = True
    try:
        while True:
            try:
                version, moved = sync_once(root, into, remote, keep)
                if moved or first:
                    print(sync_line(version, moved), flush=True)
                first = False
            except PipelineError as err:
                print(f"error: release: {err}", file=sys.stderr, flush=True)
            time.sleep(every)
    except KeyboardInterrupt:
        return


# ----------------------------------------------------------------- the command line


def headline(metrics: dict[str, dict | None]) -> str:
    """The primary metric of the transfer model and its gain over each baseline."""
    transfer = metrics.get("metrics/transfer.json") or {}
    metric, value = transfer.get("metric"), transfer.get("transfer")
    if not isinstance(value, int | float):
        return "-"
    gains = []
    for name, gain in (transfer.get("gain_over") or {}).items():
        gain = gain.get(metric) if isinstance(gain, dict) else gain
        if isinstance(gain, int | float):
            gains.append(f"{gain:+.4g} over {name}")
    return f"{metric} {value:.4g}" + (f" ({', '.join(gains)})" if gains else "")


def stage_label(version: Version, rollback_target: str | None) -> str:
    if version.champion:
        return f"{STAGE} (champion)"
    if version.version == rollback_target:
        return f"{STAGE} (rollback target)"
    return ", ".join(version.stages) or "-"


def list_text(found: list[Version]) -> str:
    if not found:
        return f"no versions of {ARTIFACT} yet (python -m flows.release publish -m MESSAGE)"
    best = next((v for v in found if v.champion), None)
    target = next((v.version for v in found if STAGE in v.stages and best and semver(v.version) < semver(best.version)), None)
    rows = [(v.version, v.date[:16].replace("T", " "), v.commit[:8], stage_label(v, target), headline(v.metrics)) for v in found]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[4] for row in rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=Path("."), help="the git + DVC workspace (default: here)")
    parser = argparse.ArgumentParser(prog="python -m flows.release", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish", parents=[common], help="push, commit, register and promote the workspace's package")
    pub.add_argument("--message", "-m", required=True, help="the release commit's message")
    pub.add_argument("--remote", type=non_empty, help="DVC remote name, URL or path (default: release, DVC's default, or .dvc/release-remote)")
    for name, text in (("list", "every version with its date, commit, stage and metrics"), ("champion", "the version in prod")):
        commands.add_parser(name, parents=[common], help=text).add_argument("--json", action="store_true")
    commands.add_parser("rollback", parents=[common], help="move prod back to the version before the champion")
    get = commands.add_parser("fetch", parents=[common], help="download a version's package from the remote")
    get.add_argument("ref", help="prod, a version (v2.0.0) or a major version (v2)")
    get.add_argument("--out", type=Path, required=True, help="a new folder for the package")
    get.add_argument("--remote", type=non_empty, help="a configured DVC remote (default: release, or DVC's default)")
    syncing = commands.add_parser("sync", parents=[common], help="point DIR/current at the prod version's package, fetched")
    syncing.add_argument("--into", type=Path, required=True, help="the folder a server watches (DIR/current, DIR/<version>/)")
    syncing.add_argument("--remote", type=non_empty, help="a configured DVC remote (default: release, or DVC's default)")
    syncing.add_argument("--every", type=positive(float), metavar="SECONDS", help="sync every SECONDS, until stopped")
    syncing.add_argument("--keep", type=positive(int), default=2, metavar="N",
                         help="version folders kept, current included (default 2: current and the one before)")
    return parser.parse_args(argv)


def non_empty(text: str) -> str:
    """--remote "" (say, an unset $REMOTE) is no remote: as a path it was the current directory,
    which then became the release remote and received the package."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: empty; name a DVC remote, a URL or a path, or leave --remote out")
    return text


def positive(kind: type) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value < float("inf"):  # not nan either: time.sleep refuses both
            raise argparse.ArgumentTypeError(f"{text!r}: not a positive {kind.__name__}")
        return value
    return parse


def execute(args: argparse.Namespace) -> str:
    if args.command == "publish":
        version = publish(args.root, args.message, args.remote)
        best = champion(args.root)
        return f"published {ARTIFACT} {version}: commit {best.commit[:8]}, package md5 {best.package_md5}, {STAGE} = {best.version}"
    if args.command == "list":
        found = versions(args.root)
        return json.dumps([asdict(v) for v in found], indent=2) if args.json else list_text(found)
    if args.command == "champion":
        best = champion(args.root)
        if best is None:
            raise ReleaseError(f"no version of {ARTIFACT} is in {STAGE} (publish one)")
        return json.dumps(asdict(best), indent=2) if args.json else f"{best.version}  commit {best.commit}  package md5 {best.package_md5}"
    if args.command == "rollback":
        before, now = rollback(args.root)
        return f"{STAGE}: {before} -> {now}"
    if args.command == "sync":
        return sync_line(*sync_once(args.root, args.into, args.remote, args.keep))
    version, out = fetch(args.root, args.ref, args.out, args.remote)
    return f"fetched {ARTIFACT} {version} into {out}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with user_errors("release"):
        if args.command == "sync" and args.every is not None:
            follow(args.root, args.into, args.remote, args.keep, args.every)
        else:
            print(execute(args))


if __name__ == "__main__":
    main()
