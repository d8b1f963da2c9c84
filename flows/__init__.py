"""Prefect flows, the typed pipeline config and the `refinery` command line."""

import logging
import os

# Runs stand alone by default: a temporary local Prefect server, no telemetry, no network.
# Set before Prefect is first imported; a user's own settings win.
for _key, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}.items():
    os.environ.setdefault(_key, _value)


class _QuietTaskRuns(logging.Filter):
    """Drop the line Prefect logs for every successful task run: each stage logs one line of
    counts instead. Failures and the tasks' own messages still go through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Finished in state Completed")


import prefect  # noqa: E402,F401  (after the settings above; sets up Prefect's logging)

logging.getLogger("prefect.task_runs").addFilter(_QuietTaskRuns())
