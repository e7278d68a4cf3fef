"""A run on a real schedule: `python -m flows.deploy --every 20s` starts a real Prefect server
(with its scheduler), serves the deployment over a fake DVC project whose train stage outlasts
the interval, and the test watches the API: one scheduled run completes with its artifact, and
the run due while it is still going never runs beside it (one run at a time). An interval
rather than a one-minute cron: the same scheduler, runner and concurrency limit, without
waiting for the next minute and then a minute more (a cron's own parsing is test_deploy's)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest

import flows.pipeline as fp
from tests.flows.test_pipeline import REPO, control, project  # noqa: F401  (fixtures)

EVERY_SECONDS = 20
RUN_SECONDS = 30  # the train stage sleeps past the next run's due time
WAIT_SECONDS = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flow_runs(api: str) -> list[dict]:
    try:
        return httpx.post(f"{api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_ASC"}, timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return []  # the server is still starting


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def settled(runs: list[dict]) -> bool:
    """The first run completed and the next one was decided: cancelled, or started."""
    if len(runs) < 2 or runs[0]["state_type"] != "COMPLETED":
        return False
    return runs[1]["state_type"] == "CANCELLED" or runs[1]["start_time"] is not None


def test_a_scheduled_deployment_runs_one_run_at_a_time_with_its_artifact(project, control, tmp_path):  # noqa: F811
    (control / "train.sleep").write_text(str(RUN_SECONDS))
    port, log = free_port(), tmp_path / "deploy.log"
    api = f"http://127.0.0.1:{port}/api"
    env = {**fp.child_env(), "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "FAKE_CONTROL": str(control),
           # a scheduler and a runner that look every few seconds, not every 60 and 10
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5", "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "flows.deploy", "--every", f"{EVERY_SECONDS}s", "--root", str(project),
               "--no-release", "--port", str(port), "--name", "every-few-seconds"]
    with log.open("wb") as out:
        deploy = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        runs: list[dict] = []
        while not settled(runs := [r for r in flow_runs(api) if r["state_type"] != "SCHEDULED"]):
            if deploy.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no scheduled run settled in {WAIT_SECONDS} s: {[(r['name'], r['state_type']) for r in runs]}\n"
                            + log.read_text(errors="replace")[-3000:])
            time.sleep(2)
        first, second = runs[0], runs[1]
        assert first["parameters"]["root"] == str(project) and first["parameters"]["release"] is False
        assert first["auto_scheduled"] is True, "started by the schedule, not by hand"
        # the second was due while the first ran, and did not run beside it
        assert when(first["start_time"]) < when(second["expected_start_time"]) < when(first["end_time"])
        # what ran, as the train stage itself logged it: Prefect's start and end times come from
        # the states' client-side timestamps, which may put a run's start a moment before the
        # previous run's end even though its concurrency slot was only granted after that end
        spans = (control / "train.spans").read_text().split()
        assert spans[:2] == ["start", "end"], spans
        assert all(a != b for a, b in zip(spans, spans[1:])), f"two runs of the train stage overlapped: {spans}"
        artifacts = httpx.post(f"{api}/artifacts/filter", timeout=10,
                               json={"artifacts": {"key": {"any_": [fp.ARTIFACT_KEY]}},
                                     "flow_runs": {"id": {"any_": [first["id"]]}}}).json()
        assert artifacts and "| evaluate | ran |" in artifacts[0]["data"]
    finally:
        deploy.terminate()
        try:
            deploy.wait(60)
        except subprocess.TimeoutExpired:
            deploy.kill()
