"""The Docker images and the GPU pins, checked without Docker: the Dockerfile is parsed (hadolint,
run by `make test`, lints it), .dockerignore is matched as Docker matches it, and the pins of
requirements-gpu.txt, requirements.txt, constraints.txt and serving/pyproject.toml are compared."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- Dockerfile parsing


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comment lines dropped (also inside a continued
    instruction, as Docker drops them), continuation lines joined."""
    found, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, rest = (pending + stripped).partition(" ")
        found.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, f"Dockerfile ends inside a continued instruction: {pending!r}"
    return found


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Each named stage (FROM ... AS name): its FROM first, then its instructions."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for word, rest in instructions(text):
        if word == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)\s+AS\s+(\S+)", rest, flags=re.IGNORECASE)
            assert match, f"every stage is named (FROM image AS name): FROM {rest}"
            current = named.setdefault(match.group(2), [])
        assert current is not None, f"{word} before the first FROM"
        current.append((word, rest))
    return named


def exec_form(arguments: str) -> list[str]:
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"exec form (a JSON list) expected: {arguments}"
    return parsed


def the(stage: list[tuple[str, str]], word: str) -> str:
    """The arguments of the stage's last `word` instruction (the one in effect)."""
    found = [rest for w, rest in stage if w == word]
    assert found, f"no {word} in the stage"
    return found[-1]


def shell_commands(run: str) -> list[list[str]]:
    """A RUN's shell line as its simple commands (split on && || ; and |)."""
    commands, current = [], []
    for token in shlex.split(run, comments=False, posix=True):
        if token in ("&&", "||", ";", "|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    return [c for c in [*commands, current] if c]


PIP_VALUE_OPTIONS = {"-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url",
                     "-f", "--find-links", "-t", "--target", "--prefix", "--root"}


def pip_installs(stage: list[tuple[str, str]]) -> list[dict[str, list[str]]]:
    """Each `pip install` of the stage's RUNs: its positional targets, -r files and -c files."""
    installs = []
    for word, rest in stage:
        if word != "RUN":
            continue
        for command in shell_commands(rest):
            # pip install, /opt/venv/bin/pip3 install, python -m pip install
            start = next((i for i in range(len(command) - 1) if re.search(r"(^|/)pip3?$", command[i]) and command[i + 1] == "install"), None)
            if start is None:
                continue
            found: dict[str, list[str]] = {"targets": [], "-r": [], "-c": []}
            args = iter(command[start + 2:])
            for arg in args:
                option, _, inline = arg.partition("=")
                if option in PIP_VALUE_OPTIONS:
                    value = inline or next(args)
                    key = {"--requirement": "-r", "--constraint": "-c"}.get(option, option)
                    found.setdefault(key, []).append(value)
                elif not arg.startswith("-"):
                    found["targets"].append(arg)
            installs.append(found)
    return installs


def copies(stage: list[tuple[str, str]]) -> dict[str, list[str]]:
    """COPY destination -> its sources (from the build context; --from copies are left out)."""
    found = {}
    for word, rest in stage:
        if word != "COPY":
            continue
        words = shlex.split(rest)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        found[paths[-1]] = paths[:-1]
    return found


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[tuple[str, str]]]:
    return stages((REPO / "Dockerfile").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def serve(dockerfile) -> list[tuple[str, str]]:
    assert "serve" in dockerfile, f"no serve target; stages: {list(dockerfile)}"
    return dockerfile["serve"]


def serving_project() -> dict:
    return tomllib.loads((REPO / "serving" / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def read_requirements(path: Path) -> dict[str, Requirement]:
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            requirement = Requirement(text)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def exact_pin(requirement: Requirement) -> str | None:
    pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
    return pins[0] if len(pins) == 1 and len(requirement.specifier) == 1 else None


def test_parser_reads_a_dockerfile_as_docker_does():
    """The helpers above on a small Dockerfile: continuations, comments inside them, targets."""
    text = """# a comment
FROM base:1 AS one
RUN pip install -c /c.txt "/src/pkg[gpu]" \\
    # a comment inside a continued RUN
    && rm -rf /src && python -m pip install --index-url https://x torch==1.0 -r /r.txt
COPY --chown=1:1 pkg /src/pkg
FROM one AS two
USER 10001
"""
    parsed = stages(text)
    assert list(parsed) == ["one", "two"]
    assert pip_installs(parsed["one"]) == [
        {"targets": ["/src/pkg[gpu]"], "-r": [], "-c": ["/c.txt"]},
        {"targets": ["torch==1.0"], "-r": ["/r.txt"], "-c": [], "--index-url": ["https://x"]},
    ]
    assert copies(parsed["one"]) == {"/src/pkg": ["pkg"]}
    assert the(parsed["two"], "USER") == "10001"


# --------------------------------------------------------------------------- serve target


def test_serve_installs_serving_with_the_gpu_extra_and_nothing_else(serve):
    """One pip install: the repo's serving/ folder with [gpu], no requirement files, no torch:
    the image's Python packages are serving/pyproject.toml's dependencies + its gpu extra."""
    installs = pip_installs(serve)
    assert len(installs) == 1, f"the serve target runs one pip install, not {installs}"
    (install,) = installs
    assert install["-r"] == [], f"no requirement files in the serve image: {install['-r']}"
    assert len(install["targets"]) == 1, f"only serving[gpu] is installed: {install['targets']}"
    match = re.fullmatch(r"(?P<path>[^\[\]]+)\[(?P<extras>[^\]]+)\]", install["targets"][0])
    assert match, f"serving is installed with an extra: {install['targets'][0]}"
    assert {e.strip() for e in match["extras"].split(",")} == {"gpu"}
    sources = copies(serve).get(match["path"].rstrip("/"))
    assert sources == ["serving"], f"{match['path']} is the repository's serving/ folder, copied: {copies(serve)}"

    project = serving_project()
    installed = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["gpu"]]
    names = {canonicalize_name(r.name) for r in installed}
    assert "onnxruntime-gpu" in names and "onnxruntime" not in names, names
    assert not names & {"torch", "transformers", "datasets"}, f"the serve image is torch-free: {names}"
    unpinned = [str(r) for r in installed if exact_pin(r) is None]
    assert not unpinned, f"serving/pyproject.toml pins exactly: {unpinned}"

    # the constraints file it installs with must agree with those pins, or the build fails
    for constraint_path in install["-c"]:
        assert copies(serve).get(constraint_path) == ["constraints.txt"], f"-c {constraint_path} is the repo's constraints.txt"
        constraints = read_requirements(REPO / "constraints.txt")
        differing = {str(r): str(constraints[canonicalize_name(r.name)]) for r in installed
                     if canonicalize_name(r.name) in constraints
                     and exact_pin(constraints[canonicalize_name(r.name)]) != exact_pin(r)}
        assert not differing, f"serving/pyproject.toml and constraints.txt pin differently: {differing}"


def test_serve_runs_as_a_non_root_user(dockerfile, serve):
    for name, stage in (("serve", serve), ("train", dockerfile["train"])):
        user = the(stage, "USER").split(":")[0]
        assert user not in ("root", "0"), f"{name} runs as {user}"
        assert user.isdigit(), f"{name}: a numeric user lets a runtime check runAsNonRoot: {user}"
        last_user = max(i for i, (w, _) in enumerate(stage) if w == "USER")
        assert all(w not in ("CMD", "ENTRYPOINT") for w, _ in stage[:last_user]), f"{name}: USER comes before CMD/ENTRYPOINT"


def test_serve_serves_the_mounted_package_over_http_on_the_exposed_port(serve):
    entrypoint, cmd = exec_form(the(serve, "ENTRYPOINT")), exec_form(the(serve, "CMD"))
    assert entrypoint == ["python", "-m", "serving"]
    model_dir = re.search(r"MODEL_DIR=(\S+)", the(serve, "ENV"))
    assert model_dir and cmd[0] == model_dir.group(1) == "/model", cmd
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0", f"reachable from outside the container: {cmd}"
    port = cmd[cmd.index("--port") + 1]
    assert the(serve, "EXPOSE").split("/")[0] == port

    healthcheck = the(serve, "HEALTHCHECK")
    probe = " ".join(exec_form(healthcheck.split("CMD", 1)[1].strip()))
    assert f"127.0.0.1:{port}/health'" in probe or f"localhost:{port}/health'" in probe, probe
    assert "urllib.request" in probe and not re.search(r"\b(curl|wget)\b", healthcheck), "python's urllib: no curl in the image"
    assert re.search(r"--timeout=\d+s", healthcheck) and re.search(r"--interval=\d+s", healthcheck), healthcheck


def test_the_cuda_versions_agree(dockerfile, serve):
    """onnxruntime-gpu on PyPI: 1.19-1.26 link CUDA 12 (their [cuda] extra needs nvidia-*-cu12),
    1.27 and later CUDA 13. torch's index (cuXYZ) matches the train image's CUDA."""
    serve_cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-\S+\s+AS\s+serve", the(serve, "FROM"), re.IGNORECASE)
    assert serve_cuda, the(serve, "FROM")
    gpu_pin = Version(exact_pin(Requirement(serving_project()["optional-dependencies"]["gpu"][0])))
    ort_cuda_major = 13 if gpu_pin >= Version("1.27") else 12
    assert int(serve_cuda.group(1)) == ort_cuda_major, f"onnxruntime-gpu {gpu_pin} needs CUDA {ort_cuda_major}: {the(serve, 'FROM')}"

    train = dockerfile["train"]
    train_cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.", the(train, "FROM"))
    assert train_cuda, the(train, "FROM")
    torch_installs = [i for i in pip_installs(train) if any(t.startswith("torch==") for t in i["targets"])]
    assert len(torch_installs) == 1, torch_installs
    (index,) = torch_installs[0]["--index-url"]
    assert index.rstrip("/").endswith(f"/cu{train_cuda.group(1)}{train_cuda.group(2)}"), index
    torch_pin = next(t for t in torch_installs[0]["targets"] if t.startswith("torch=="))
    assert Requirement(torch_pin).specifier == read_requirements(REPO / "requirements.txt")["torch"].specifier


# --------------------------------------------------------------------------- .dockerignore


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(exception?, regex) per line, in order, as Docker reads them (root-relative, ** for any
    depth; a later line wins)."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex, i = "", 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif glob[i] == "[":
                end = glob.index("]", i)
                regex, i = regex + glob[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((negate, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether the path is left out of the build context: it or a folder above it matches."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negate, regex in patterns:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result


OUT_OF_CONTEXT = [
    "data/external/sentiment/movies.jsonl", "data/prepared/target/test.jsonl", "models/onnx/model.onnx",
    "models/target/model.safetensors", "runs/translation/params.yaml", ".venv/bin/python", ".git/HEAD",
    ".dvc/cache/files/md5/ab/cdef", ".dvc/tmp/lock", "checkpoints/checkpoint-5/optimizer.pt",
    "dvclive/pretrain/metrics.json", "metrics/transfer.json", "plots/classification/budget_curve.json",
    "reports/data.json", ".prefect/prefect.db", "serving/build/lib/serving/__init__.py",
    "serving/transfer_serving.egg-info/PKG-INFO", "tasks/__pycache__/params.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed", ".ruff_cache/CACHEDIR.TAG",
]
IN_CONTEXT = [
    "Dockerfile", "Makefile", "dvc.yaml", "params.yaml", "dvc.lock", ".dvc/config", ".dvcignore", ".gitignore",
    "requirements.txt", "constraints.txt", "serving/pyproject.toml", "serving/__main__.py", "tasks/params.py",
    "tasks/common/paths.py", "flows/pipeline.py", "demos/translation.yaml",
]


def test_dockerignore_keeps_data_models_and_state_out_and_the_code_in():
    patterns = dockerignore_patterns()
    let_in = [p for p in OUT_OF_CONTEXT if not ignored(p, patterns)]
    assert not let_in, f".dockerignore lets these into the build context: {let_in}"
    left_out = [p for p in IN_CONTEXT if ignored(p, patterns)]
    assert not left_out, f".dockerignore leaves these out of the build context: {left_out}"
    code = [p.relative_to(REPO).as_posix() for folder in ("tasks", "flows", "serving", "bench")
            for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts]
    assert code and not [p for p in code if ignored(p, patterns)]


def test_the_matcher_follows_dockers_rules():
    patterns = [(False, re.compile("data")), (False, re.compile(r"(?:.*/)?__pycache__")), (True, re.compile(r"data/keep"))]
    assert ignored("data/x/y", patterns) and not ignored("tasks/data/x", patterns)
    assert ignored("a/b/__pycache__/c.pyc", patterns) and not ignored("data/keep", patterns)


def test_every_copied_source_is_in_the_build_context(dockerfile):
    patterns = dockerignore_patterns()
    for name, stage in dockerfile.items():
        for dest, sources in copies(stage).items():
            for source in sources:
                assert source == "." or (REPO / source).exists(), f"{name}: COPY {source} {dest}: not in the repository"
                assert source == "." or not ignored(source.strip("/"), patterns), f"{name}: COPY {source}: .dockerignore leaves it out"


# --------------------------------------------------------------------------- GPU pins


def test_requirements_gpu_pins_the_onnxruntime_gpu_of_servings_gpu_extra():
    gpu = read_requirements(REPO / "requirements-gpu.txt")
    (extra,) = [Requirement(r) for r in serving_project()["optional-dependencies"]["gpu"]]
    assert canonicalize_name(extra.name) == "onnxruntime-gpu"
    assert "onnxruntime-gpu" in gpu, "requirements-gpu.txt pins onnxruntime-gpu"
    assert exact_pin(gpu["onnxruntime-gpu"]) is not None, str(gpu["onnxruntime-gpu"])
    assert gpu["onnxruntime-gpu"].specifier == extra.specifier, f"{gpu['onnxruntime-gpu']} vs serving[gpu] {extra}"


def test_requirements_gpu_is_requirements_txt_with_onnxruntime_gpu():
    """The same packages at the same versions, but onnxruntime -> onnxruntime-gpu (the two must
    not share a venv) and torch (installed from PyTorch's CUDA index, see the file's header)."""
    gpu = read_requirements(REPO / "requirements-gpu.txt")
    cpu = read_requirements(REPO / "requirements.txt")
    assert "onnxruntime" not in gpu, "onnxruntime-gpu and the CPU onnxruntime overwrite each other's files"
    assert set(gpu) - {"onnxruntime-gpu"} == set(cpu) - {"onnxruntime", "torch"}, (
        f"only in requirements-gpu.txt: {sorted(set(gpu) - set(cpu) - {'onnxruntime-gpu'})}; "
        f"only in requirements.txt: {sorted(set(cpu) - set(gpu) - {'onnxruntime', 'torch'})}")
    differing = {name: (str(gpu[name]), str(cpu[name])) for name in set(gpu) & set(cpu) if gpu[name].specifier != cpu[name].specifier}
    assert not differing, f"requirements-gpu.txt and requirements.txt pin differently: {differing}"
