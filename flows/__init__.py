"""Prefect flows, the typed pipeline config and the `refinery` command line."""

import os

# Runs stand alone by default: a temporary local Prefect server, no telemetry, no network.
# Set before Prefect is first imported; a user's own settings win.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL": "WARNING",  # one line per stage instead
}.items():
    os.environ.setdefault(_key, _value)
