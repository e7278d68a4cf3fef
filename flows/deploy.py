"""Scheduled retraining: `python -m flows.deploy --cron "0 3 * * *"` serves the pipeline flow.

`--every 6h` schedules by interval instead (s, m, h or d; from the moment it is registered).

Run it from the repository root with the project's venv (the deployment's entrypoint is the
module `flows.pipeline`). The deployment allows one run at a time: a run due while another
is still going is cancelled (CANCEL_NEW), so two runs never collide on DVC's repository lock;
a run over unchanged data and params finds every stage up to date and retrains nothing.
Each run ends with champion / challenger (flows.pipeline --release): the new package replaces
the champion (GTO's prod, flows/release.py) only when it wins on the decision set.

  --print            print the deployment as JSON and exit (no Prefect server needed)
  --work-pool POOL   register the deployment with a work pool instead of serving it here;
                     a process worker must run in this repository with its venv
                     (`prefect worker start --pool POOL`), or give --image for a Docker pool

Serving needs a Prefect server with its scheduler: PREFECT_API_URL when set, else one already
on 127.0.0.1:--port, else one started there for as long as this command runs (run history
and UI at that address). Prefect's own temporary server runs no scheduler: no cron would fire.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from pydantic import ValidationError

DEFAULT_NAME = "scheduled-retraining"
DEFAULT_CRON = "0 3 * * *"
BANNED_NAME_CHARACTERS = ("/", "%", "&", ">", "<")  # Prefect refuses them in a deployment name
NEXT_RUNS = 3
DURATION = re.compile(r"(\d+)([smhd]?)")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_INTERVAL_SECONDS = 100 * 365 * 86400  # timedelta and Prefect's dates end at year 9999


class DeployError(Exception):
    """A bad argument, reported as one line."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m flows.deploy", description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("--cron", help=f'when to run (default "{DEFAULT_CRON}": 03:00 daily)')
    parser.add_argument("--every", help="run at this interval instead of a cron: 30m, 6h, 1d (s, m, h, d)")
    parser.add_argument("--timezone", default="UTC", help="IANA time zone of the schedule (default UTC)")
    parser.add_argument("--name", default=DEFAULT_NAME, help=f"deployment name (default {DEFAULT_NAME})")
    parser.add_argument("--root", default=".", help="the DVC repository the runs work in (default: here)")
    parser.add_argument("--force", action="store_true", help="scheduled runs re-run every stage")
    parser.add_argument("--no-release", dest="release", action="store_false",
                        help="scheduled runs only retrain: no champion / challenger, nothing published")
    parser.add_argument("--work-pool", help="register with this work pool instead of serving")
    parser.add_argument("--image", help="with --work-pool: the Docker image the runs use")
    parser.add_argument("--port", type=int, default=4200, help="local Prefect server port when PREFECT_API_URL is unset")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print the deployment and exit")
    return parser.parse_args(argv)


def configured_api() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prefect_api(port: int, startup_timeout: float = 180) -> Iterator[str]:
    """The API to serve against. Prefect's own temporary server (what runs when no API is set)
    has no scheduler in Prefect 3.9: a cron would never fire. So: PREFECT_API_URL when set, else
    a Prefect server already on 127.0.0.1:<port>, else one started there (its log and database
    in PREFECT_HOME) for as long as this process serves."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if url := configured_api():
        yield url
        return
    url, server = f"http://127.0.0.1:{port}/api", None
    if not healthy(url):
        log = Path(get_current_settings().home) / "server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"starting a Prefect server on 127.0.0.1:{port} (log {log}) ...", flush=True)
        with log.open("ab") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + startup_timeout
        while not healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise DeployError(f"the Prefect server on port {port} did not start; see {log}")
            time.sleep(1)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)


def check_schedule(cron: str, timezone: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    if not timezone.strip():  # Prefect takes "" as "no time zone" and stores it as such
        raise DeployError(f"--timezone {timezone!r}: expected an IANA time zone such as UTC or Europe/Berlin")
    if len(cron.split()) == 6:  # croniter (Prefect's scheduler) reads a 6th field as seconds, last
        raise DeployError(f"--cron {cron!r}: 6 fields; Prefect reads the 6th as seconds (not the first, as Quartz "
                          "does), so this starts a run every second it matches: give 5 fields, e.g. '0 3 * * *'")
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as err:
        first = err.errors()[0]
        raise DeployError(f"--{first['loc'][0]} {first['input']!r}: {first['msg'].removeprefix('Value error, ')}") from None


def interval(every: str) -> timedelta:
    """`--every`: a whole number of seconds, minutes, hours or days (`90`, `90s`, `30m`, `6h`, `1d`)."""
    match = DURATION.fullmatch(every.strip().lower())
    if not match or int(match[1]) == 0:
        raise DeployError(f"--every {every!r}: expected a positive duration such as 30m, 6h or 1d")
    seconds = int(match[1]) * UNIT_SECONDS[match[2]]
    if seconds > MAX_INTERVAL_SECONDS:
        raise DeployError(f"--every {every!r}: longer than {MAX_INTERVAL_SECONDS // 86400 // 365} years; "
                          "a schedule that never fires is none")
    return timedelta(seconds=seconds)


def schedule(args: argparse.Namespace):
    """The deployment's one schedule: --cron (the default) or --every, never both."""
    from prefect.schedules import Cron, Interval

    if args.every is not None and args.cron is not None:
        raise DeployError("--cron and --every: give one schedule, not both")
    if args.cron is not None and not args.cron.strip():  # an unset $CRON in a script: not the default
        raise DeployError(f"--cron {args.cron!r}: empty; give a cron such as '0 3 * * *', or leave --cron out for the default")
    if args.every is not None:
        check_schedule(DEFAULT_CRON, args.timezone)  # the time zone alone
        return Interval(interval(args.every), timezone=args.timezone)
    check_schedule(args.cron or DEFAULT_CRON, args.timezone)
    return Cron(args.cron or DEFAULT_CRON, timezone=args.timezone)


def describe(schedule) -> str:
    if getattr(schedule, "cron", None):
        return f"cron {schedule.cron!r} ({schedule.timezone})"
    return f"every {schedule.interval} from {schedule.anchor_date.isoformat(timespec='seconds')}"


def next_interval_runs(schedule, count: int = NEXT_RUNS) -> list[str]:
    """The first runs of an interval schedule: its anchor (when it was built) plus whole
    intervals; a run due before the scheduler first looks is not made, so the anchor is not one."""
    return [(schedule.anchor_date + step * schedule.interval).isoformat() for step in range(1, count + 1)]


def next_runs(cron: str, timezone: str, count: int = NEXT_RUNS, now: datetime | None = None) -> list[str]:
    """The next runs as the Prefect server's scheduler computes them (its CronSchedule, with
    Prefect's vendored croniter): a 6-field cron has seconds last there, and `@daily` works."""
    from prefect.server.schemas.schedules import CronSchedule

    dates = asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(n=count, start=now or datetime.now(ZoneInfo(timezone))))
    return [date.isoformat() for date in dates]


def build(args: argparse.Namespace):
    """The RunnerDeployment: schedule, one run at a time (CANCEL_NEW), absolute root."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    from flows.pipeline import pipeline

    when = schedule(args)
    if args.image and not args.work_pool:
        raise DeployError("--image needs --work-pool")
    root = Path(args.root).resolve()
    if not (root / "dvc.yaml").is_file():
        raise DeployError(f"--root {str(root)!r}: no dvc.yaml there")
    if not args.name.strip() or any(char in args.name for char in BANNED_NAME_CHARACTERS):
        raise DeployError(f"--name {args.name!r}: a deployment name must not be empty nor hold any of "
                          f"{' '.join(BANNED_NAME_CHARACTERS)}")
    return pipeline.to_deployment(
        name=args.name,
        schedules=[when],
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters={"root": str(root), "force": args.force, "release": args.release},
        tags=["retraining"],
        description="Scheduled retraining: every stage of dvc.yaml through dvc repro (up-to-date stages are skipped).",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def spec(deployment, args: argparse.Namespace) -> dict:
    when = deployment.schedules[0].schedule
    if getattr(when, "cron", None):
        shown, runs = {"cron": when.cron, "timezone": when.timezone}, next_runs(when.cron, when.timezone)
    else:
        shown = {"interval_seconds": when.interval.total_seconds(), "timezone": when.timezone,
                 "anchor_date": when.anchor_date.isoformat()}
        runs = next_interval_runs(when)
    return {
        "name": deployment.name,
        "flow": deployment.flow_name,
        "entrypoint": deployment.entrypoint,
        "schedule": shown,
        "next_runs": runs,
        "concurrency_limit": deployment.concurrency_limit,
        "collision_strategy": deployment.concurrency_options.collision_strategy.value,
        "parameters": deployment.parameters,
        "tags": deployment.tags,
        "work_pool": args.work_pool,
        "image": args.image,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        deployment = build(args)
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    if args.print_only:
        print(json.dumps(spec(deployment, args), indent=2))
        return
    if args.work_pool:
        if not configured_api():
            print("error: --work-pool needs a Prefect server its workers also reach: set PREFECT_API_URL", file=sys.stderr)
            sys.exit(1)
        deployment_id = deployment.apply(work_pool_name=args.work_pool, image=args.image)
        print(f"deployment {deployment.flow_name}/{deployment.name} ({deployment_id}) registered with "
              f"work pool {args.work_pool!r}; start a worker: prefect worker start --pool {args.work_pool}")
        return
    from prefect import serve

    try:
        with prefect_api(args.port) as url:
            print(f"serving {deployment.flow_name}/{deployment.name}: {describe(deployment.schedules[0].schedule)}, "
                  f"one run at a time; Prefect API {url}", flush=True)
            serve(deployment, limit=1)  # this process's runner also runs at most one flow at a time
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
