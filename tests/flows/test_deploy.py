"""`python -m flows.deploy --print`: the deployment it would serve, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, UTC
from pathlib import Path

import pytest

from flows import deploy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def printed(capsys, *args: str) -> dict:
    deploy.main(["--print", *args])
    return json.loads(capsys.readouterr().out)


def failed(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        deploy.main(["--print", *args])
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_default_is_nightly_one_run_at_a_time(capsys, root: Path):
    spec = printed(capsys, "--root", str(root))
    assert spec["schedule"] == {"cron": "0 3 * * *", "timezone": "UTC"}
    assert spec["concurrency_limit"] == 1 and spec["collision_strategy"] == "CANCEL_NEW"
    assert spec["flow"] == "transfer-pipeline" and spec["entrypoint"] == "flows.pipeline.pipeline"
    assert spec["parameters"] == {"root": str(root.resolve()), "force": False, "release": True}
    runs = [datetime.fromisoformat(run) for run in spec["next_runs"]]
    assert len(runs) == 3 and runs == sorted(runs)
    assert all((run.hour, run.minute, run.utcoffset().total_seconds()) == (3, 0, 0) for run in runs)


def test_cron_and_timezone_are_parsed(capsys, root: Path):
    spec = printed(capsys, "--root", str(root), "--cron", "*/15 6-7 * * 1-5", "--timezone", "Europe/Paris",
                   "--name", "weekday-mornings")
    assert spec["name"] == "weekday-mornings"
    assert spec["schedule"] == {"cron": "*/15 6-7 * * 1-5", "timezone": "Europe/Paris"}
    for run in map(datetime.fromisoformat, spec["next_runs"]):
        assert run.minute in (0, 15, 30, 45) and run.hour in (6, 7) and run.isoweekday() <= 5
        assert run.utcoffset().total_seconds() in (3600, 7200)


def test_every_schedules_an_interval_from_now(capsys, root: Path):
    before = datetime.now(UTC)
    spec = printed(capsys, "--root", str(root), "--every", "6h")
    assert spec["schedule"]["interval_seconds"] == 6 * 3600 and spec["schedule"]["timezone"] == "UTC"
    anchor = datetime.fromisoformat(spec["schedule"]["anchor_date"])
    assert before <= anchor <= datetime.now(UTC)
    runs = [datetime.fromisoformat(run) for run in spec["next_runs"]]
    assert [(run - anchor).total_seconds() for run in runs] == [6 * 3600, 12 * 3600, 18 * 3600]


@pytest.mark.parametrize("every, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("1D", 86400), (" 2h ", 7200)])
def test_every_reads_a_number_and_a_unit(every: str, seconds: int):
    assert deploy.interval(every).total_seconds() == seconds


def test_next_runs_from_a_fixed_time():
    now = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert deploy.next_runs("0 3 * * *", "UTC", now=now) == [
        "2025-02-01T03:00:00+00:00", "2025-02-02T03:00:00+00:00", "2025-02-03T03:00:00+00:00"]


@pytest.mark.parametrize("cron, expected", [
    ("@daily", ["2025-02-01T00:00:00+00:00", "2025-02-02T00:00:00+00:00", "2025-02-03T00:00:00+00:00"]),
    # six fields: Prefect's scheduler (croniter) reads the last as seconds, so this fires every
    # second of 03:00; --print must say so, not show cronsim's reading (seconds first: hourly)
    ("0 3 * * * *", ["2025-02-01T03:00:00+00:00", "2025-02-01T03:00:01+00:00", "2025-02-01T03:00:02+00:00"]),
])
def test_next_runs_are_the_prefect_schedulers(cron: str, expected: list[str]):
    assert deploy.next_runs(cron, "UTC", now=datetime(2025, 1, 31, 12, 0, tzinfo=UTC)) == expected


def test_print_takes_every_cron_prefect_accepts(capsys, root: Path):
    shown = printed(capsys, "--root", str(root), "--cron", "@hourly")
    assert shown["schedule"]["cron"] == "@hourly" and len(shown["next_runs"]) == 3


@pytest.mark.parametrize("args, expected", [
    (["--cron", "0 3 * *"], "error: --cron '0 3 * *': Invalid cron string"),
    (["--cron", "61 3 * * *"], "error: --cron '61 3 * * *': Invalid cron string"),
    (["--timezone", "Mars/Olympus"], "error: --timezone 'Mars/Olympus': Invalid timezone"),
    (["--image", "registry/pipeline:1"], "error: --image needs --work-pool"),
    (["--every", "0"], "error: --every '0': expected a positive duration such as 30m, 6h or 1d"),
    (["--every", "6 hours"], "error: --every '6 hours': expected a positive duration"),
    (["--every", "2w"], "error: --every '2w': expected a positive duration"),
    (["--every", "1h", "--cron", "0 3 * * *"], "error: --cron and --every: give one schedule, not both"),
    (["--every", "1h", "--timezone", "Mars/Olympus"], "error: --timezone 'Mars/Olympus': Invalid timezone"),
    (["--timezone", ""], "error: --timezone '': expected an IANA time zone"),
    (["--cron", ""], "error: --cron '': empty; give a cron such as '0 3 * * *'"),
    (["--cron", "0 3 * * * *"], "error: --cron '0 3 * * * *': 6 fields; Prefect reads the 6th as seconds"),
    (["--cron", "0 0 3 * * *"], "error: --cron '0 0 3 * * *': 6 fields"),
    (["--every", "1h", "--timezone", " "], "error: --timezone ' ': expected an IANA time zone"),
    (["--every", "9999999999d"], "error: --every '9999999999d': longer than 100 years"),
    (["--name", ""], "error: --name '': a deployment name must not be empty"),
    (["--name", "nightly/amazon"], "error: --name 'nightly/amazon': a deployment name must not be empty nor hold any of /"),
])
def test_bad_arguments_are_one_line(capsys, root: Path, args: list[str], expected: str):
    assert failed(capsys, "--root", str(root), *args).startswith(expected)


def test_root_without_dvc_yaml(capsys, tmp_path: Path):
    assert failed(capsys, "--root", str(tmp_path)) == f"error: --root '{tmp_path}': no dvc.yaml there"


def test_module_cli(tmp_path: Path, root: Path):
    done = subprocess.run([sys.executable, "-m", "flows.deploy", "--print", "--root", str(root)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["concurrency_limit"] == 1
    bad = subprocess.run([sys.executable, "-m", "flows.deploy", "--print", "--cron", "bad"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip() == "error: --cron 'bad': Invalid cron string: \"bad\""
