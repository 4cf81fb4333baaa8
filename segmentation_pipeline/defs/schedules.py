"""The nightly refresh: `segmentation_job` at 02:00, on by default.

The cron string and the timezone are read from the environment when the code location
loads, so an operator can move the refresh without a code change (and the end-to-end test
can make it fire every minute). Without a timezone Dagster would use UTC silently; here it
is explicit and shown in the UI.
"""

import os
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

from segmentation_pipeline.defs.jobs import segmentation_job

CRON_ENV = "SEGMENTATION_SCHEDULE_CRON"
TIMEZONE_ENV = "SEGMENTATION_SCHEDULE_TIMEZONE"
DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"


def schedule_cron() -> str:
    """$SEGMENTATION_SCHEDULE_CRON, else 02:00 every day."""
    return os.environ.get(CRON_ENV, "").strip() or DEFAULT_CRON


def schedule_timezone() -> str:
    """$SEGMENTATION_SCHEDULE_TIMEZONE (an IANA name such as Europe/Berlin), else UTC."""
    name = os.environ.get(TIMEZONE_ENV, "").strip() or DEFAULT_TIMEZONE
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{TIMEZONE_ENV}={name!r} is not a timezone name; use an IANA name such as "
            "'UTC' or 'Europe/Berlin'"
        ) from None
    return name


def build_nightly_schedule(
    cron: str | None = None, timezone: str | None = None
) -> dg.ScheduleDefinition:
    """The schedule, from the arguments or else the environment (see module docstring)."""
    cron = cron or schedule_cron()
    timezone = timezone or schedule_timezone()
    try:
        return dg.ScheduleDefinition(
            name="nightly_segmentation",
            job=segmentation_job,
            cron_schedule=cron,
            execution_timezone=timezone,
            default_status=dg.DefaultScheduleStatus.RUNNING,
            tags={"segmentation/trigger": "schedule"},
            description=(
                f"Refresh the warehouse with segmentation_job ({cron}, {timezone}). Runs queue "
                "behind each other: at most one run of the code location is in progress."
            ),
        )
    except dg.DagsterInvalidDefinitionError as error:
        raise ValueError(
            f"{CRON_ENV}={cron!r} is not a cron schedule ({error}); use five fields such as "
            f"'{DEFAULT_CRON}' (minute hour day-of-month month day-of-week)"
        ) from None


nightly_segmentation = build_nightly_schedule()
