"""Arbitrary params files: `load_params` returns Params or raises a one-line ParamsError, nothing else.

Hypothesis writes text, bytes, damaged copies of the demo params files and structurally mutated
params (leaves replaced by huge, infinite or odd values, keys deleted or added) and loads each.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.common.errors import ParamsError
from tasks.params import Params, load_params
from tests.conftest import REPO
from tests.test_params import run_params_cli

# Modest: the whole file runs in seconds; no example database written into the checkout.
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
DEMOS = [REPO / "params.yaml", REPO / "demos" / "translation.yaml"]


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file rewritten by every example (hypothesis refuses function-scoped fixtures)."""
    return tmp_path_factory.mktemp("fuzz") / "params.yaml"


def load_or_error(params_file: Path, content: bytes) -> Params | None:
    """The loaded params, or None after a well-formed ParamsError; anything else fails the test."""
    params_file.write_bytes(content)
    try:
        params = load_params(params_file)
    except ParamsError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(str(params_file)), message
        return None
    assert_finite(params.model_dump())
    return params


def assert_finite(value: Any) -> None:
    """Whatever validates is usable: no inf/nan, no int past 64 bits."""
    if isinstance(value, dict):
        for item in value.values():
            assert_finite(item)
    elif isinstance(value, list):
        for item in value:
            assert_finite(item)
    elif isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, int):
        assert abs(value) < 2**63


# ---------------------------------------------------------------- (a) text and bytes


@FUZZ
@given(text=st.text(max_size=300))
def test_arbitrary_text(params_file: Path, text: str):
    load_or_error(params_file, text.encode("utf-8"))


@FUZZ
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(params_file: Path, data: bytes):
    load_or_error(params_file, data)


YAML_PIECES = st.sampled_from([b"\t", b"  ", b"\n", b":", b"- ", b"&a ", b"*a", b"<<: ", b"{", b"[", b"!!", b"2024-13-45", b"\xe9"])


@st.composite
def damaged_demo(draw: st.DrawFn) -> bytes:
    """A demo params file with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(DEMOS)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "delete":
            del data[at : at + draw(st.integers(1, 20))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8) | YAML_PIECES)
            data[at : at + (len(chunk) if action == "replace" else 0)] = chunk
    return bytes(data)


@FUZZ
@given(content=damaged_demo())
def test_damaged_demo_files(params_file: Path, content: bytes):
    load_or_error(params_file, content)


# ---------------------------------------------------------------- (b) structured mutations


ODD_NUMBERS = st.sampled_from([0, -1, 1, 2**31, 2**32, 2**63, 2**64, 10**23, -(10**23), 10**300, 1e308, -1e308, 5e-324, -0.0])
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    ODD_NUMBERS,
    st.floats(),  # inf, -inf and nan included
    st.text(max_size=20),
    st.sampled_from(["", "inf", ".inf", "nan", "1e400", "auto", "classification", "translation", "scratch", "2024-13-45"]),
)
NUMBERS = st.sampled_from([math.inf, -math.inf, math.nan]) | ODD_NUMBERS | st.floats() | st.integers()
KEYS = st.text(max_size=12) | st.integers(-5, 5) | st.booleans() | st.none()
VALUES = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
DEMO_PARAMS = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in DEMOS]


def places(node: Any, path: tuple = ()) -> list[tuple]:
    """Every path into the params tree (the root included)."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += places(value, (*path, index))
    return found


def number_places(params: dict) -> list[tuple]:
    """Paths to the numbers of the tree, and to its nulls (optional numbers such as max_rows)."""
    leaves = [path for path in places(params) if path]
    return [path for path in leaves if type(parent_of(params, path)[path[-1]]) in (int, float, type(None))]


def parent_of(root: Any, path: tuple) -> Any:
    for part in path[:-1]:
        root = root[part]
    return root


# Scalars written into the YAML text as they are: tags, dates and numbers that PyYAML's own
# constructors refuse or turn into odd values, and references to anchors that do not exist.
RAW_SCALARS = st.sampled_from([
    "2024-13-45", "2001-02-29", "2001-01-01 00:00:00 +99:00", "0000-01-01", "!!int abc", "!!float x", "!!binary 'a'",
    "!!python/object/apply:os.system [ls]", "!!python/name:os.system", "!!set {a, b}", "!!omap [a: 1]", "!!str [1]",
    "*nowhere", "{<<: 1}", "{<<: [1]}", ".inf", "-.inf", ".NaN", "1e400", "0x1F", "0o17", "190:20:30", "1_000", "~",
    "{1: a, 1.0: b}", "{true: a, 1: b}", "{a: 1, a: 2}", "[" * 60 + "]" * 60, "!!timestamp x", "!", "!!null x",
])


@st.composite
def mutated_params(draw: st.DrawFn) -> str:
    """A demo params file with one to five random edits, as YAML text."""
    params = copy.deepcopy(draw(st.sampled_from(DEMO_PARAMS)))
    raw: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 5))):
        action = draw(st.sampled_from(["replace", "replace", "number", "number", "raw", "delete", "add"]))
        path = draw(st.sampled_from(number_places(params) if action == "number" else places(params)))
        target = parent_of(params, path)[path[-1]] if path else params
        if action == "add" and isinstance(target, dict):
            target[draw(KEYS)] = draw(VALUES)
        elif action == "add" and isinstance(target, list):
            target.append(draw(VALUES))
        elif not path:
            continue
        elif action == "delete":
            del parent_of(params, path)[path[-1]]
        elif action == "raw":  # a marker now, the raw scalar once dumped
            marker = f"RAWSCALAR{len(raw)}"
            raw[marker] = draw(RAW_SCALARS)
            parent_of(params, path)[path[-1]] = marker
        else:
            parent_of(params, path)[path[-1]] = draw(NUMBERS if action == "number" else VALUES)
    text = yaml.safe_dump(params, sort_keys=False, allow_unicode=True)
    for marker, scalar in raw.items():
        text = text.replace(marker, scalar)
    return text


@FUZZ
@given(text=mutated_params())
def test_mutated_params(params_file: Path, text: str):
    load_or_error(params_file, text.encode("utf-8"))


@st.composite
def one_number_changed(draw: st.DrawFn) -> str:
    """A demo params file with one number (or null) replaced: the file stays valid but for it."""
    params = copy.deepcopy(draw(st.sampled_from(DEMO_PARAMS)))
    path = draw(st.sampled_from(number_places(params)))
    parent_of(params, path)[path[-1]] = draw(NUMBERS)
    return yaml.safe_dump(params, sort_keys=False)


@FUZZ
@given(text=one_number_changed())
def test_one_number_changed(params_file: Path, text: str):
    load_or_error(params_file, text.encode("utf-8"))


def test_the_mutations_reach_validation(params_file: Path):
    """The demos themselves load, so the mutations above start from valid files."""
    for demo in DEMO_PARAMS:
        assert load_or_error(params_file, yaml.safe_dump(demo, sort_keys=False).encode("utf-8")) is not None


# ---------------------------------------------------------------- (c) the command line


def test_cli_bad_file_is_one_error_line(tmp_path: Path):
    params_file = tmp_path / "params.yaml"
    params_file.write_bytes(b"seed: !!python/object/apply:os.system [echo hi]\n# caf\xc3\xa9\n")
    result = run_params_cli(params_file)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not valid YAML" in lines[0], result.stderr


@settings(max_examples=15, deadline=None)
@given(text=st.text(max_size=200))
def test_python_m_tasks_params_on_any_text_exits_0_or_1_with_one_line(tmp_path_factory, text: str):
    params_file = tmp_path_factory.mktemp("cli") / "my.yaml"
    params_file.write_text(text, encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "tasks.params", str(params_file)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
    if result.returncode:
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: params: ")
