"""Prefect for the flow tests: a private PREFECT_HOME, no analytics, and one test harness
(temporary database + API server, ~10 s to start) for the whole session."""

from __future__ import annotations

import os
import tempfile

# Before anything imports prefect: its settings are read from the environment at import.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_API_URL", None)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
