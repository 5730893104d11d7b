"""The daily schedule: shortly after midnight UTC, materialize yesterday's partition of everything."""

from datetime import timedelta

import dagster as dg

from loyalty_pipeline.jobs import everything_job


@dg.schedule(job=everything_job, cron_schedule="15 0 * * *", execution_timezone="UTC")
def daily_materialization(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Yesterday's UTC day, complete by now: raw tables, the ledger and journeys for that day, then the lifetime tables."""
    yesterday = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=yesterday, partition_key=yesterday)
