"""The Prefect flows over the DVC stages (pipeline, deploy) and the workspace helper."""

import os

# Prefect gives its ephemeral API server 20 s to start; a 2-core machine that is also training
# (or a CI runner) can need more, and the run then fails before any stage. A user's own value wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
